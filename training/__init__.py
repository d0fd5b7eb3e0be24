"""
Fine-tuning ViLAMP with `transformers.Trainer`: the released recipe's data (JSON lists, YAML mixtures, LLaVA
conversations) or chat `messages`, labelled as the released recipe did, decoded and scored in the DataLoader.

- `examples`: reading data files and records into `TrainingExample`s;
- `labels`: the language-modelling targets of a tokenised conversation (`"released"` or `"assistant"` masking);
- `videos`: an example's video (files and frame folders, concatenated) and the per-process cache of decoded videos;
- `data`: `VilampTrainingDataset` (model inputs and labels per example) and `VilampDataCollator` (batches);
- `trainable`: what trains (parts by name) and a learning rate per part (`VilampTrainer`);
- `recipe`: the released recipe's settings (`TrainingRecipe`) and the run behind `vilamp train`;
- `scorer`: the model and its frame scorer as one module (`VilampWithFrameScorer`), to train the scorer too.
"""

from .data import VilampDataCollator, VilampTrainingDataset
from .examples import TrainingExample, load_examples, parse_example
from .labels import IGNORE_INDEX, LABEL_MASKINGS, make_labels
from .recipe import TrainingRecipe, train
from .scorer import VilampWithFrameScorer
from .trainable import (
    ORIGINAL_PART_NAMES,
    PARTS,
    RELEASED_PARTS,
    LockstepVisionChunksMixin,
    PartLearningRatesMixin,
    VilampTrainer,
    lockstep_vision_chunks,
    parameter_groups,
    parameter_parts,
    resolve_parts,
    set_trainable_parts,
)


__all__ = [
    "IGNORE_INDEX",
    "LABEL_MASKINGS",
    "ORIGINAL_PART_NAMES",
    "PARTS",
    "RELEASED_PARTS",
    "LockstepVisionChunksMixin",
    "PartLearningRatesMixin",
    "TrainingExample",
    "TrainingRecipe",
    "VilampDataCollator",
    "VilampTrainer",
    "VilampTrainingDataset",
    "VilampWithFrameScorer",
    "load_examples",
    "lockstep_vision_chunks",
    "make_labels",
    "parameter_groups",
    "parameter_parts",
    "parse_example",
    "resolve_parts",
    "set_trainable_parts",
    "train",
]
