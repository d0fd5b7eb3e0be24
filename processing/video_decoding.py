"""
Video decoding and frame sampling (reference section 1).

A video is sampled at about one frame per second (every `int(native_fps)`-th frame), then thinned uniformly to at
most `max_frames`. Frames are decoded a chunk at a time: the caller turns each native-resolution chunk into what it
keeps (small frames, embeddings) before the next one is decoded, so memory is bounded by the outputs, never by N
native-resolution frames.
"""

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


VideoInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Image.Image]


def is_frame_list(video) -> bool:
    """Whether `video` is one video given as a list (or tuple) of PIL images."""
    return isinstance(video, (list, tuple)) and all(isinstance(frame, Image.Image) for frame in video)


def sample_frame_indices(num_frames: int, native_fps: float, fps: float, max_frames: int | None) -> np.ndarray:
    """
    Indices of the frames kept from a video of `num_frames` frames at `native_fps`: every `int(native_fps / fps)`-th
    frame (at least every frame), then `numpy.linspace(0, n - 1, max_frames, dtype=int)` of those if more than
    `max_frames` remain.
    """
    step = max(1, int(native_fps / fps))
    indices = np.arange(0, num_frames, step)
    if max_frames is not None and len(indices) > max_frames:
        indices = indices[np.linspace(0, len(indices) - 1, max_frames, dtype=int)]
    return indices


@dataclass
class VideoSource:
    """A video opened for decoding: its name for messages, frame count and rate, and a way to read frames."""

    name: str
    num_frames: int
    native_fps: float
    reader: object

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Frames at `indices` as `(len(indices), H, W, 3)` uint8 RGB."""
        if isinstance(self.reader, np.ndarray):
            return self.reader[indices]
        try:
            return self.reader.get_batch(indices.tolist()).asnumpy()
        except Exception as error:  # decord raises its own error types for damaged streams
            raise ValueError(f"Cannot decode frames of video {self.name}: {error}") from error


def open_video(video: VideoInput, decoded_fps: float = 1.0) -> VideoSource:
    """
    Opens a path with decord, or wraps already decoded frames (`(N, H, W, 3)` uint8 array or tensor, or a list of
    PIL images). Decoded frames are taken to be at `decoded_fps` frames per second.
    """
    if isinstance(video, (str, os.PathLike)):
        return _open_video_file(Path(video))
    if isinstance(video, torch.Tensor):
        video = video.cpu().numpy()
    if is_frame_list(video):
        video = (
            np.stack([np.asarray(frame.convert("RGB")) for frame in video])
            if video
            else np.zeros((0, 1, 1, 3), np.uint8)
        )
    if not isinstance(video, np.ndarray):
        raise ValueError(
            f"Unsupported video input of type {type(video).__name__}: give a file path, an (N, H, W, 3) uint8 "
            "array or tensor, or a list of PIL images."
        )
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"Decoded video frames must be (N, H, W, 3) uint8, got {video.dtype} of shape {video.shape}.")
    if video.shape[0] == 0:
        raise ValueError("The decoded video has zero frames.")
    return VideoSource(name="(decoded frames)", num_frames=video.shape[0], native_fps=decoded_fps, reader=video)


def _open_video_file(path: Path) -> VideoSource:
    if not path.is_file():
        raise FileNotFoundError(f"Video file not found: {path}")
    import decord  # imported here so that decoded inputs need no video backend

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as error:  # decord reports unreadable containers with its own error types
        raise ValueError(f"Cannot read video {path}: {error}") from error
    if len(reader) == 0:
        raise ValueError(f"Video {path} has zero frames.")
    native_fps = float(reader.get_avg_fps())
    if not native_fps > 0:
        raise ValueError(f"Video {path} reports a frame rate of {native_fps}.")
    return VideoSource(name=str(path), num_frames=len(reader), native_fps=native_fps, reader=reader)


def iter_frame_chunks(source: VideoSource, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
    """Yields the frames at `indices`, in order, `chunk_size` at a time, as native-resolution uint8 RGB arrays."""
    for start in range(0, len(indices), chunk_size):
        yield source.read(indices[start : start + chunk_size])


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """`(N, H, W, 3)` uint8 -> `(N, 3, size, size)` uint8, bicubic and without keeping the aspect (SigLIP's resize)."""
    resized = np.empty((len(frames), 3, size, size), dtype=np.uint8)
    for index, frame in enumerate(frames):
        resized[index] = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC)).transpose(2, 0, 1)
    return resized
