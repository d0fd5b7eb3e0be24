"""
Fine-tuning data for ViLAMP: a `torch.utils.data.Dataset` of model inputs with labels, and the collator that
batches them.

All the video work (decoding, CLIP frame scoring, keyframe selection) happens in `__getitem__`, so in the
DataLoader's workers, never in the training step. The dataset returns model inputs only, every one a
`VilampForConditionalGeneration.forward` argument, so `transformers.Trainer` keeps them with its default
`remove_unused_columns=True`:

    dataset = VilampTrainingDataset.from_file("data.yaml", processor, video_folder="videos")
    trainer = Trainer(model, args, train_dataset=dataset, data_collator=VilampDataCollator(processor.tokenizer))

Sequences are not truncated: with the released 32,768-token `model_max_length`, cap the frames instead (the
processor's `max_frames`, through `processor_kwargs`).
"""

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from ..processing import VilampProcessor
from .examples import load_examples, named_video, parse_example
from .labels import IGNORE_INDEX, check_label_masking, make_labels
from .videos import PreparedVideoCache, VideoParts


logger = logging.getLogger(__name__)
# What a broken example raises on its way to model inputs: bad fields, unreadable or missing videos and frames.
BROKEN_EXAMPLE_ERRORS = (ValueError, OSError)


class VilampTrainingDataset(torch.utils.data.Dataset):
    """
    Training conversations about videos, each turned into model inputs and labels when it is read.

    An item holds `input_ids`, `attention_mask` and `labels` (1-D), `pixel_values_videos` (uint8 `(N, 3, S, S)`),
    `keyframe_mask` and `frame_relevance` (`(N,)`), and `query_embeds` (`(D,)`); `VilampDataCollator` batches them.

    Args:
        examples: records in the original's format or as chat `messages` (see `training.examples`); a list, or any
            sequence of mappings such as a Hugging Face `datasets.Dataset`.
        processor: the `VilampProcessor` that decodes, scores and selects keyframes, and tokenises.
        video_folder: the folder that the records' video paths are relative to.
        label_masking: `"released"` (default, the released recipe's targets) or `"assistant"` (the assistant's
            words only); see `training.labels`.
        skip_broken: read the next example instead of raising when one is broken (a missing or unreadable video,
            an empty frame folder, a conversation without its video slot), as the original does, so that example
            stands in twice in an epoch. Skipped examples are logged as warnings and kept in `skipped`.
        video_cache_size: decoded and scored videos kept per process, so that the questions asked about one video
            decode it once while they are read near each other (a DataLoader worker has its own cache).
        frame_folder_fps: the rate at which frame folders' images were taken (1 by default: every image is kept).
        processor_kwargs: passed to every processor call, e.g. `{"max_frames": None}` for the released recipe's
            uncapped sampling, or `{"num_keyframes": 32}`.
        scorer_inputs: also return what the frame scorer read, for training it with the model
            (`training.scorer.VilampWithFrameScorer`): `scorer_pixel_values`, the sampled frames as CLIP inputs
            (float32 `(N, 3, S, S)`: 0.6 MB a frame at CLIP's 224 px), and `scorer_input_ids`, the question's 77
            CLIP tokens.

    Attributes:
        skipped: `{index: reason}` of the broken examples this process skipped (each DataLoader worker keeps its
            own; their warnings are logged either way).
    """

    def __init__(
        self,
        examples: Sequence[Mapping],
        processor: VilampProcessor,
        video_folder: str | os.PathLike | None = None,
        label_masking: str = "released",
        skip_broken: bool = False,
        video_cache_size: int = 4,
        frame_folder_fps: float = 1.0,
        processor_kwargs: Mapping | None = None,
        scorer_inputs: bool = False,
    ):
        check_label_masking(label_masking)
        self.examples = examples
        self.video_folder = video_folder
        self.label_masking = label_masking
        self.skip_broken = skip_broken
        self.processor_kwargs = dict(processor_kwargs or {})
        self.skipped: dict[int, str] = {}
        self.processor = processor
        self.scorer_inputs = scorer_inputs
        self.videos = PreparedVideoCache(
            processor, video_cache_size, frame_folder_fps, keep_scorer_inputs=scorer_inputs
        )

    @classmethod
    def from_file(
        cls, data_path: str | os.PathLike, processor: VilampProcessor, seed: int = 0, **kwargs
    ) -> "VilampTrainingDataset":
        """
        The examples of a JSON, JSON Lines or YAML mixture file (see `training.examples.load_examples`; `seed`
        drives its `random:N` sampling); other keyword arguments as for the constructor.
        """
        return cls(load_examples(data_path, seed=seed), processor, **kwargs)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Example `index`'s model inputs and labels; with `skip_broken`, the next working one's if it is broken."""
        if not self.skip_broken:
            return self.example_inputs(index)
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self.skipped:
                continue
            try:
                return self.example_inputs(candidate)
            except ValueError as error:
                self.skipped[candidate] = str(error)
                logger.warning("Skipped: %s", error)
        raise ValueError(f"Every one of the {len(self)} training examples is broken; see the warnings.")

    def example_inputs(self, index: int) -> dict[str, torch.Tensor]:
        """
        Model inputs and labels of example `index`; a broken example raises `ValueError` naming it and its video.
        """
        record = self.examples[index]
        try:
            example = parse_example(record, self.video_folder, self.processor.video_token)
            text = self.processor.apply_chat_template(example.messages, tokenize=False)
            video = self.videos.prepare(VideoParts(example.videos), self.processor_kwargs)
            inputs = self.processor(text=text, videos=video, query=example.query, **self.processor_kwargs)
        except BROKEN_EXAMPLE_ERRORS as error:
            raise ValueError(f"Training example {index} (video {named_video(record)}): {error}") from error
        input_ids = inputs["input_ids"][0]
        item = {
            "input_ids": input_ids,
            "attention_mask": inputs["attention_mask"][0],
            "labels": make_labels(
                input_ids, self.processor.tokenizer, self.processor.video_token_id, self.label_masking
            ),
            "pixel_values_videos": inputs["pixel_values_videos"],
            "keyframe_mask": inputs["keyframe_mask"],
            "query_embeds": inputs["query_embeds"][0],
            "frame_relevance": inputs["frame_relevance"],
        }
        if self.scorer_inputs:
            # The question the processor embedded: the record's query, or the one it read off the conversation.
            query = example.query or self.processor.questions_next_to_videos(text)[0]
            item["scorer_pixel_values"] = video.scorer_pixel_values
            item["scorer_input_ids"] = self.processor.frame_scorer.tokenizer([query])[0]
        return item


@dataclass
class VilampDataCollator:
    """
    Batches `VilampTrainingDataset` items, for `Trainer(data_collator=...)`: the videos' frames, keyframe masks and
    relevances concatenated, their query embeddings stacked and their frame counts in `video_frame_counts`;
    `input_ids` padded with the tokenizer's pad token, `attention_mask` with 0 and `labels` with -100.

    Args:
        tokenizer: the processor's tokenizer, for its pad token and padding side.
        padding_side: `"right"` or `"left"`; the tokenizer's `padding_side` (right unless set) when `None`.
    """

    tokenizer: PreTrainedTokenizerBase
    padding_side: str | None = None

    def __call__(self, examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The batch of model inputs with `labels` for `examples`."""
        if self.tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token: set `tokenizer.pad_token` before batching.")
        side = self.padding_side or self.tokenizer.padding_side
        if side not in ("right", "left"):
            raise ValueError(f"`padding_side` must be 'right' or 'left', got {side!r}.")
        return {
            "input_ids": pad(examples, "input_ids", self.tokenizer.pad_token_id, side),
            "attention_mask": pad(examples, "attention_mask", 0, side),
            "labels": pad(examples, "labels", IGNORE_INDEX, side),
            "pixel_values_videos": torch.cat([example["pixel_values_videos"] for example in examples]),
            "keyframe_mask": torch.cat([example["keyframe_mask"] for example in examples]),
            "frame_relevance": torch.cat([example["frame_relevance"] for example in examples]),
            "query_embeds": torch.stack([example["query_embeds"] for example in examples]),
            "video_frame_counts": torch.tensor([len(example["pixel_values_videos"]) for example in examples]),
            **scorer_batch(examples),
        }


def scorer_batch(examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The frame scorer's inputs of `examples` batched (frames concatenated, questions stacked), if they have them."""
    if "scorer_pixel_values" not in examples[0]:
        return {}
    return {
        "scorer_pixel_values": torch.cat([example["scorer_pixel_values"] for example in examples]),
        "scorer_input_ids": torch.stack([example["scorer_input_ids"] for example in examples]),
    }


def pad(examples: Sequence[Mapping[str, torch.Tensor]], key: str, value: int, side: str) -> torch.Tensor:
    """The 1-D `key` tensors of `examples` stacked, padded with `value` on `side` to the longest."""
    return pad_sequence(
        [example[key] for example in examples], batch_first=True, padding_value=value, padding_side=side
    )
