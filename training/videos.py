"""
An example's video for training: files and frame folders concatenated into one video, and a per-process cache of
prepared videos (the processor's video-only step), so that the questions asked about one video (about ten in the
released data) decode and score it once.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..processing import PreparedVideos, VilampProcessor
from ..processing.video_processing_vilamp import PreparedVideo, VilampVideoMetadata


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


def concatenate_videos(parts: Sequence[PreparedVideo]) -> PreparedVideo:
    """
    Prepared videos one after another as one: frames, frame embeddings and scorer inputs concatenated, each part's
    timestamps shifted by the duration of the parts before it.
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
    return PreparedVideo(
        frames=np.concatenate([part.frames for part in parts]),
        metadata=metadata,
        frame_embeds=concatenated([part.frame_embeds for part in parts]),
        scorer_pixel_values=concatenated([part.scorer_pixel_values for part in parts]),
    )


def concatenated(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The parts' tensors one after another, or None where a part has none."""
    return torch.cat(tensors) if all(tensor is not None for tensor in tensors) else None


class PreparedVideoCache:
    """
    The last `max_videos` examples' videos after the processor's video-only step (`VilampProcessor.prepare_video`:
    sampling, decoding, resizing, CLIP frame embeddings), least recently used first out. Keyframe selection, which
    depends on the question, still runs on every call.

    Args:
        processor: the processor whose `prepare_video` makes them.
        max_videos: videos kept (`PreparedVideos`); 0 turns the cache off.
        frame_folder_fps: the rate at which a folder's images were taken from their video; the processor samples
            them like any video (at its default 1 fps from 1 fps frames, every image).
        keep_scorer_inputs: also keep what the frame scorer read (`PreparedVideo.scorer_pixel_values`), to train it.
    """

    def __init__(
        self,
        processor: VilampProcessor,
        max_videos: int = 4,
        frame_folder_fps: float = 1.0,
        keep_scorer_inputs: bool = False,
    ):
        if not (isinstance(frame_folder_fps, (int, float)) and frame_folder_fps > 0):
            raise ValueError(f"`frame_folder_fps` must be a positive number, got {frame_folder_fps!r}.")
        self.processor = processor
        self.videos = PreparedVideos(max_videos)
        self.frame_folder_fps = frame_folder_fps
        self.keep_scorer_inputs = keep_scorer_inputs

    def prepare(self, video: VideoParts, settings: Mapping) -> PreparedVideo:
        """The prepared concatenation of `video`'s parts under the processor keyword arguments `settings`."""
        return self.videos.get(
            video, settings, lambda: concatenate_videos([self.prepare_part(path, settings) for path in video.paths])
        )

    def prepare_part(self, path: Path, settings: Mapping) -> PreparedVideo:
        """One video file, or one folder of frames, through the processor's video-only step."""
        if path.is_dir():
            frames = read_frame_folder(path)
            metadata = {"total_num_frames": len(frames), "fps": self.frame_folder_fps}
            return self.processor.prepare_video(frames, metadata, self.keep_scorer_inputs, **settings)
        if not path.exists():
            raise FileNotFoundError(f"Video not found: {path}")
        return self.processor.prepare_video(str(path), None, self.keep_scorer_inputs, **settings)
