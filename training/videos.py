"""
An example's video for training: files and frame folders concatenated into one video, and a per-process cache of
decoded and scored videos, so that the questions asked about one video (about ten in the released data) decode and
score it once.

The cache sits in front of the video processor: `VilampProcessor` is called as for inference, and only its
`video_processor.process_video_for_call` (sampling, decoding, resizing, CLIP frame embeddings) is answered from the
cache. Keyframe selection, which depends on the question, still runs on every call.
"""

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..processing.decoding_threads import ChunkScorer
from ..processing.frame_scoring import FrameScorer
from ..processing.video_processing_vilamp import (
    ProcessedVideo,
    VilampVideoMetadata,
    VilampVideoProcessor,
)


@dataclass(frozen=True)
class VideoParts:
    """One example's video: files or folders of frame images, concatenated in this order."""

    paths: tuple[Path, ...]


def read_frame_folder(folder: str | os.PathLike) -> list[Image.Image]:
    """
    The images of a frame folder as RGB, in sorted file-name order (as the original reads them: `frame_10.png`
    comes before `frame_2.png`). Files that PIL does not know by their extension are not frames and are left out.
    """
    folder = Path(folder)
    known = Image.registered_extensions()
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in known)
    if not files:
        raise ValueError(f"Frame folder {folder} holds no images.")
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                frames.append(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"Cannot read frame {file}: {error}") from error
    return frames


def concatenate_videos(parts: Sequence[ProcessedVideo]) -> ProcessedVideo:
    """
    Processed videos one after another as one: frames and frame embeddings concatenated, each part's timestamps
    shifted by the duration of the parts before it.
    """
    if len(parts) == 1:
        return parts[0]
    timestamps, offset = [], 0.0
    for part in parts:
        timestamps += [offset + seconds for seconds in part.metadata.timestamps]
        offset += part.metadata.duration
    metadata = VilampVideoMetadata(
        total_num_frames=len(timestamps),
        fps=parts[0].metadata.fps,
        duration=offset,
        frames_indices=list(range(len(timestamps))),
        presentation_times=timestamps,
    )
    embeds = [part.frame_embeds for part in parts]
    return ProcessedVideo(
        frames=np.concatenate([part.frames for part in parts]),
        metadata=metadata,
        frame_embeds=torch.cat(embeds) if all(embed is not None for embed in embeds) else None,
    )


class InputKeepingScorer:
    """`frame_scorer`, keeping the CLIP inputs it makes, in order, in `kept`."""

    def __init__(self, frame_scorer: FrameScorer, kept: list[torch.Tensor]):
        self.frame_scorer, self.kept = frame_scorer, kept

    @property
    def device(self) -> torch.device:
        return self.frame_scorer.device

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        pixels = self.frame_scorer.preprocess(frames)
        self.kept.append(pixels)
        return pixels

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.frame_scorer.embed_pixels(pixels)


class CachingVideoProcessor:
    """
    A `VilampVideoProcessor` stand-in whose `process_video_for_call` takes `VideoParts` and remembers the last
    `max_videos` results (least recently used first out); everything else is the wrapped processor's.

    Args:
        video_processor: the processor that samples, decodes and resizes.
        max_videos: videos kept; each holds its sampled frames at the tower's size as uint8 (600 frames at 384 px
            are 265 MB). 0 turns the cache off.
        frame_folder_fps: the rate at which a folder's images were taken from their video; the processor samples
            them like any video (at its default 1 fps from 1 fps frames, every image).
        frame_scorer: when given, the frames are scored with it (as `FrameScorer.embed_frames` does) and the CLIP
            inputs it made are kept: `last_scorer_pixels` holds those of the last video asked for, cached with it.

    Attributes:
        last_scorer_pixels: `(N, 3, S, S)` the frame scorer's inputs for the last video (with `frame_scorer`).
    """

    def __init__(
        self,
        video_processor: VilampVideoProcessor,
        max_videos: int = 4,
        frame_folder_fps: float = 1.0,
        frame_scorer: FrameScorer | None = None,
    ):
        if isinstance(max_videos, bool) or not isinstance(max_videos, int) or max_videos < 0:
            raise ValueError(f"`max_videos` must be a non-negative integer, got {max_videos!r}.")
        if not (isinstance(frame_folder_fps, (int, float)) and frame_folder_fps > 0):
            raise ValueError(f"`frame_folder_fps` must be a positive number, got {frame_folder_fps!r}.")
        self.video_processor = video_processor
        self.max_videos = max_videos
        self.frame_folder_fps = frame_folder_fps
        self.frame_scorer = frame_scorer
        self.last_scorer_pixels: torch.Tensor | None = None
        self.cache: OrderedDict[tuple, tuple[ProcessedVideo, torch.Tensor | None]] = OrderedDict()

    def __getattr__(self, name: str):
        # Only reached for names this wrapper lacks; unpickling asks before `video_processor` is set.
        if name == "video_processor":
            raise AttributeError(name)
        return getattr(self.video_processor, name)

    def __getstate__(self) -> dict:
        # Each process fills its own cache: shipping decoded videos to DataLoader workers costs more than decoding.
        return {**self.__dict__, "cache": OrderedDict()}

    def process_video_for_call(
        self,
        video: VideoParts,
        video_metadata: dict | None,
        call_kwargs: dict,
        frame_scorer: ChunkScorer | None = None,
    ) -> ProcessedVideo:
        """The processed (and scored, with a scorer) concatenation of `video`'s parts, from the cache if there."""
        if not isinstance(video, VideoParts) or video_metadata is not None:
            raise TypeError("CachingVideoProcessor takes VideoParts, without metadata.")
        # The call's settings (max_frames, fps, ...) decide which frames are kept, so they are part of the key.
        key = (video, repr(sorted(call_kwargs.items())))
        if key not in self.cache:
            scorer_pixels = []
            if self.frame_scorer is not None:
                frame_scorer = InputKeepingScorer(self.frame_scorer, scorer_pixels)
            parts = [self.process_part(path, call_kwargs, frame_scorer) for path in video.paths]
            self.cache[key] = (concatenate_videos(parts), torch.cat(scorer_pixels) if scorer_pixels else None)
        self.cache.move_to_end(key)
        processed, self.last_scorer_pixels = self.cache[key]
        if len(self.cache) > self.max_videos:
            self.cache.popitem(last=False)
        return processed

    def process_part(self, path: Path, call_kwargs: dict, frame_scorer: ChunkScorer | None) -> ProcessedVideo:
        """One video file, or one folder of frames, through the wrapped processor."""
        if path.is_dir():
            frames = read_frame_folder(path)
            metadata = {"total_num_frames": len(frames), "fps": self.frame_folder_fps}
            return self.video_processor.process_video_for_call(frames, metadata, call_kwargs, frame_scorer)
        if not path.exists():
            raise FileNotFoundError(f"Video not found: {path}")
        return self.video_processor.process_video_for_call(str(path), None, call_kwargs, frame_scorer)
