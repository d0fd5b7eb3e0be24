"""
The frame scorer E_f: CLIP ViT-B/32 (QuickGELU) run with open_clip. Its image embeddings of the sampled frames and
its text embedding of the question drive keyframe selection; the question's embedding also feeds the model's
differential feature merging.

The weights live inside the processor's directory (`frame_scorer.safetensors` with `frame_scorer_config.json`), so
nothing is downloaded at run time.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.model import CLIP
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


WEIGHTS_NAME = "frame_scorer.safetensors"
CONFIG_NAME = "frame_scorer_config.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MEAN_ARRAY = np.array(CLIP_MEAN, dtype=np.float32)[:, None, None]
CLIP_STD_ARRAY = np.array(CLIP_STD, dtype=np.float32)[:, None, None]


class FrameScorer:
    """
    open_clip CLIP with the preprocessing the original used (transformers' CLIPProcessor: shortest edge resized
    bicubic to the image size, centre crop, CLIP mean/std) and its tokenizer (77 tokens, truncated).

    Args:
        config: open_clip `CLIP` keyword arguments (`embed_dim`, `vision_cfg`, `text_cfg`, `quick_gelu`).
        state_dict: weights in open_clip's layout; random weights when omitted.
    """

    def __init__(self, config: dict, state_dict: dict[str, torch.Tensor] | None = None):
        self.config = config
        self.model = CLIP(**config).eval()
        if state_dict is not None:
            self.model.load_state_dict(state_dict, strict=True)
        self.image_size = int(config["vision_cfg"]["image_size"])
        self.context_length = int(config["text_cfg"].get("context_length", 77))
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)

    @property
    def device(self) -> torch.device:
        """Where the CLIP model is."""
        return self.model.logit_scale.device

    def to(self, device: str | torch.device) -> "FrameScorer":
        """Moves the CLIP model to `device`, where frames and queries are then embedded; returns the scorer."""
        self.model.to(device)
        return self

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "FrameScorer":
        """Loads the scorer saved by [`FrameScorer.save_pretrained`] in `directory`."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"No frame scorer file {name} in {directory}.")
        config = _read_scorer_file(directory / CONFIG_NAME, lambda path: json.loads(path.read_text()))
        state_dict = _read_scorer_file(directory / WEIGHTS_NAME, load_file)
        try:
            return cls(config, state_dict)
        except (KeyError, TypeError, RuntimeError) as error:
            raise ValueError(
                f"The frame scorer in {directory} does not match its {CONFIG_NAME}: {str(error).splitlines()[0]}"
            ) from error

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Writes the weights (safetensors) and the open_clip config (JSON) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {key: tensor.contiguous() for key, tensor in self.model.state_dict().items()}
        # One metadata entry only: safetensors writes metadata from a hash map, so several would make the file's
        # bytes differ between runs.
        save_file(state, directory / WEIGHTS_NAME, metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """
        `(N, H, W, 3)` uint8 RGB frames -> `(N, 3, S, S)` normalised CLIP inputs, with PIL and NumPy: the processor
        runs it in its scoring threads, each chunk on one thread, just before the chunk's forward pass.
        """
        size = self.image_size
        crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
        for index, frame in enumerate(frames):
            height, width = frame.shape[:2]
            # transformers' CLIPProcessor computes the long side as int(size * long / short), in this order: a
            # precomputed scale (size / short) * long rounds 49 * (32 / 49) down to 31 and would crop past the edge.
            short, long = min(height, width), max(height, width)
            new_short, new_long = size, int(size * long / short)
            new_height, new_width = (new_short, new_long) if height <= width else (new_long, new_short)
            resized = np.asarray(Image.fromarray(frame).resize((new_width, new_height), Image.BICUBIC))
            top, left = (new_height - size) // 2, (new_width - size) // 2
            crops[index] = resized[top : top + size, left : left + size]
        # float32 throughout, in CLIPProcessor's order (rescale, then normalise): the same IEEE operations as torch's.
        pixels = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return torch.from_numpy((pixels - CLIP_MEAN_ARRAY) / CLIP_STD_ARRAY)

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """`(N, H, W, 3)` uint8 RGB frames -> `(N, embed_dim)` image embeddings (not normalised)."""
        return self.embed_pixels(self.preprocess(frames))

    @torch.no_grad()
    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Already preprocessed `(N, 3, S, S)` CLIP inputs -> `(N, embed_dim)` image embeddings."""
        return self.model.encode_image(pixel_values.to(self.device))

    @torch.no_grad()
    def embed_queries(self, queries: Sequence[str]) -> torch.Tensor:
        """Questions -> `(len(queries), embed_dim)` text embeddings, each truncated to the scorer's 77 tokens."""
        tokens = self.tokenizer(list(queries)).to(self.device)
        return self.model.encode_text(tokens)


def _read_scorer_file(path: Path, read):
    try:
        return read(path)
    except (ValueError, SafetensorError) as error:  # a JSONDecodeError is a ValueError
        raise ValueError(f"Cannot read the frame scorer file {path}: {error}") from error
