"""
Fine-tuning ViLAMP with `transformers.Trainer`: the released recipe's data (JSON lists, YAML mixtures, LLaVA
conversations) or chat `messages`, labelled as the released recipe did, decoded and scored in the DataLoader.

- `examples`: reading data files and records into `TrainingExample`s;
- `labels`: the language-modelling targets of a tokenised conversation (`"released"` or `"assistant"` masking);
- `videos`: an example's video (files and frame folders, concatenated) and the per-process cache of decoded videos;
- `data`: `VilampTrainingDataset` (model inputs and labels per example) and `VilampDataCollator` (batches).
"""

from .data import VilampDataCollator, VilampTrainingDataset
from .examples import TrainingExample, load_examples, parse_example
from .labels import IGNORE_INDEX, LABEL_MASKINGS, make_labels


__all__ = [
    "IGNORE_INDEX",
    "LABEL_MASKINGS",
    "TrainingExample",
    "VilampDataCollator",
    "VilampTrainingDataset",
    "load_examples",
    "make_labels",
    "parse_example",
]
