"""
Video decoding and frame sampling (reference section 1).

A video is sampled at about one frame per second, then thinned uniformly to at most `max_frames`. For a video with a
constant frame rate this is the reference rule, every `int(native_fps)`-th frame; for a variable frame rate (phones,
screen recordings) a frame index says nothing about time, so the frames shown at 0 s, 1 s, 2 s, ... are kept instead,
read from the decoder's presentation times. Timestamps always come from those presentation times.

Frames are decoded a chunk at a time: the caller turns each native-resolution chunk into what it keeps (small frames,
embeddings) before the next one is decoded, so memory is bounded by the outputs, never by N native-resolution frames.
Files are decoded with PyAV (FFmpeg), upright: a phone video's rotation metadata is applied.
"""

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


VideoInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Image.Image]
# Frame intervals within this fraction of the median interval count as one constant frame rate: encoders jitter
# timestamps by a few percent, while a variable-rate video holds frames for several intervals or packs them densely.
FRAME_RATE_TOLERANCE = 0.5


def is_frame_list(video) -> bool:
    """
    Whether `video` is one video given as a list (or tuple) of PIL images. One PIL image in a list is enough: a list
    of videos never holds a bare image, and `open_video` then names any item that is not an image.
    """
    return isinstance(video, (list, tuple)) and any(isinstance(frame, Image.Image) for frame in video)


def check_sampling_settings(fps: float, max_frames: int | None) -> None:
    """Raises `ValueError` naming `fps` or `max_frames` when they cannot sample a video."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"`fps` must be a positive number of frames per second, got {fps!r}.")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"`max_frames` must be a positive integer or None, got {max_frames!r}.")


def thin_uniformly(indices: np.ndarray, max_frames: int | None) -> np.ndarray:
    """`numpy.linspace(0, n - 1, max_frames, dtype=int)` of `indices` when more than `max_frames` remain."""
    if max_frames is not None and len(indices) > max_frames:
        indices = indices[np.linspace(0, len(indices) - 1, max_frames, dtype=int)]
    return indices


def sample_frame_indices(num_frames: int, native_fps: float, fps: float, max_frames: int | None) -> np.ndarray:
    """
    The reference rule for a constant frame rate: every `int(native_fps / fps)`-th of `num_frames` frames (at least
    every frame), then thinned uniformly to `max_frames`.
    """
    check_sampling_settings(fps, max_frames)
    step = max(1, int(native_fps / fps))
    return thin_uniformly(np.arange(0, num_frames, step), max_frames)


def sample_frames_by_time(timestamps: np.ndarray, fps: float, max_frames: int | None) -> np.ndarray:
    """
    For a variable frame rate: the frame on screen at each multiple of `1 / fps` seconds (the last one presented at
    or before it), each frame at most once, then thinned uniformly to `max_frames`. `timestamps` are sorted seconds.
    """
    check_sampling_settings(fps, max_frames)
    grid = np.arange(0.0, timestamps[-1] - timestamps[0] + 1e-9, 1.0 / fps) + timestamps[0]
    on_screen = np.searchsorted(timestamps, grid + 1e-9, side="right") - 1
    return thin_uniformly(np.unique(on_screen), max_frames)


def has_constant_frame_rate(timestamps: np.ndarray) -> bool:
    """Whether every interval between consecutive frames is within `FRAME_RATE_TOLERANCE` of the median interval."""
    if len(timestamps) < 3:
        return True
    intervals = np.diff(timestamps)
    median = float(np.median(intervals))
    return median > 0 and bool(np.all(np.abs(intervals - median) <= FRAME_RATE_TOLERANCE * median))


class VideoSource:
    """
    A video opened for decoding: its name for messages, its frames' presentation times in seconds from the first
    frame, and its nominal frame rate.
    """

    def __init__(self, name: str, timestamps: np.ndarray, native_fps: float):
        self.name = name
        self.timestamps = timestamps
        self.native_fps = native_fps

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)

    def sample(self, fps: float, max_frames: int | None) -> np.ndarray:
        """Indices of the frames kept at about `fps` frames per second, at most `max_frames` of them."""
        if has_constant_frame_rate(self.timestamps):
            return sample_frame_indices(self.num_frames, self.native_fps, fps, max_frames)
        return sample_frames_by_time(self.timestamps, fps, max_frames)

    def iter_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        """Yields the frames at the increasing `indices`, `chunk_size` at a time, as `(n, H, W, 3)` uint8 RGB."""
        raise NotImplementedError


class DecodedVideo(VideoSource):
    """Frames already in memory, `(N, H, W, 3)` uint8, taken to be `fps` frames per second."""

    def __init__(self, frames: np.ndarray, fps: float):
        super().__init__("(decoded frames)", np.arange(len(frames)) / fps, fps)
        self.frames = frames

    def sample(self, fps: float, max_frames: int | None) -> np.ndarray:
        # Frames given in memory are evenly spaced by definition: the reference rule applies.
        return sample_frame_indices(self.num_frames, self.native_fps, fps, max_frames)

    def iter_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(indices), chunk_size):
            yield self.frames[indices[start : start + chunk_size]]


class VideoFile(VideoSource):
    """A video file decoded with PyAV; frames come out upright (rotation metadata applied) as RGB."""

    def __init__(self, path: Path):
        import av  # imported here so that decoded frames need no video backend

        self.path = path
        try:
            with av.open(str(path)) as container:
                stream = _video_stream(container, path)
                # Presentation times of every frame, from the packets alone (no decoding).
                self._pts, num_packets = _packet_pts(container, stream)
                time_base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        except av.FFmpegError as error:
            raise ValueError(f"Cannot read video {path}: {_ffmpeg_reason(error)}.") from error
        if num_packets == 0:
            raise ValueError(f"Video {path} has zero frames.")
        if self._pts is not None:
            timestamps = (self._pts - self._pts[0]).astype(np.float64) * float(time_base)
            native_fps = float(rate) if rate else _rate_from_timestamps(timestamps)
        else:
            # A raw stream without timestamps: frames are counted, and only the nominal rate tells their times.
            native_fps = float(rate or 0)
            timestamps = np.arange(num_packets) / native_fps if native_fps > 0 else np.zeros(0)
        if not native_fps > 0:
            raise ValueError(f"Video {path} has no timestamps and no usable frame rate (reported {rate}).")
        super().__init__(str(path), timestamps, native_fps)

    def iter_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        import av

        chunk: list[np.ndarray] = []
        try:
            for frame in self._decode_frames(indices):
                chunk.append(frame)
                if len(chunk) == chunk_size:
                    yield np.stack(chunk)
                    chunk = []
        except av.FFmpegError as error:
            raise ValueError(f"Cannot decode frames of video {self.name}: {_ffmpeg_reason(error)}.") from error
        if chunk:
            yield np.stack(chunk)

    def _decode_frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """Decodes the stream in order and yields the upright RGB frames at `indices` (increasing)."""
        import av

        wanted = iter(indices.tolist())
        next_index = next(wanted, None)
        if next_index is None:
            return
        with av.open(str(self.path)) as container:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"
            for position, frame in enumerate(container.decode(stream)):
                if self._frame_index(frame, position) != next_index:
                    continue
                yield _upright_rgb(frame)
                next_index = next(wanted, None)
                if next_index is None:
                    return
        raise ValueError(
            f"Cannot decode frames of video {self.name}: the frame at {self.timestamps[next_index]:.3f} s "
            "(and any after it) could not be decoded."
        )

    def _frame_index(self, frame, position: int) -> int:
        """Index of a decoded frame in the frame table; -1 for a frame the table does not hold."""
        if self._pts is None:
            return position
        # Matched by timestamp, not by counting: a decoder that drops a damaged frame must not shift every later
        # frame by one.
        index = int(np.searchsorted(self._pts, frame.pts)) if frame.pts is not None else -1
        return index if 0 <= index < len(self._pts) and self._pts[index] == frame.pts else -1


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise ValueError(f"{path} has no video stream.")
    return container.streams.video[0]


def _packet_pts(container, stream) -> tuple[np.ndarray | None, int]:
    """Sorted presentation timestamps of the stream's frames (packets come in decoding order), and the packet count;
    the timestamps are None when some packet has none."""
    pts: list[int | None] = [packet.pts for packet in container.demux(stream) if packet.size > 0]
    if any(value is None for value in pts):
        return None, len(pts)
    return np.unique(np.asarray(pts, dtype=np.int64)), len(pts)


def _rate_from_timestamps(timestamps: np.ndarray) -> float:
    duration = float(timestamps[-1] - timestamps[0])
    return (len(timestamps) - 1) / duration if duration > 0 else 0.0


def _upright_rgb(frame) -> np.ndarray:
    """The frame as `(H, W, 3)` uint8 RGB, turned as its display matrix says (phones store portrait video sideways)."""
    rgb = frame.to_ndarray(format="rgb24")
    # `rotation` is the display matrix's counter-clockwise angle; FFmpeg's players turn the picture by it.
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns)) if quarter_turns else rgb


def _ffmpeg_reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def open_video(video: VideoInput, decoded_fps: float = 1.0) -> VideoSource:
    """
    Opens a video file with PyAV, or wraps already decoded frames: an `(N, H, W, 3)` uint8 array or tensor, or a list
    of PIL images of one size. Decoded frames are taken to be at `decoded_fps` frames per second.
    """
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if not path.is_file():
            raise FileNotFoundError(f"Video file not found: {path}")
        return VideoFile(path)
    return DecodedVideo(_frames_array(video), decoded_fps)


def _frames_array(video) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, (list, tuple)):
        video = _stack_frame_list(video)
    if not isinstance(video, np.ndarray):
        raise ValueError(
            f"Unsupported video input of type {type(video).__name__}: give a file path, an (N, H, W, 3) uint8 "
            "array or tensor, or a list of PIL images."
        )
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(
            f"Decoded video frames must be (N, H, W, 3) uint8 RGB, got {video.dtype} of shape {video.shape}"
            + (": convert floats in 0..255 with .astype(np.uint8)." if video.dtype.kind == "f" else ".")
        )
    if video.shape[0] == 0:
        raise ValueError("The decoded video has zero frames.")
    if 0 in video.shape[1:3]:
        raise ValueError(f"The decoded video's frames are empty: shape {video.shape}.")
    return video


def _stack_frame_list(frames: Sequence) -> np.ndarray:
    if not frames:
        raise ValueError("The decoded video has zero frames (an empty list).")
    for position, frame in enumerate(frames):
        if not isinstance(frame, Image.Image):
            raise ValueError(
                f"A video given as a list must hold PIL images only; item {position} is {type(frame).__name__}."
            )
    sizes = {frame.size for frame in frames}
    if len(sizes) > 1:
        first = frames[0].size
        odd = next(position for position, frame in enumerate(frames) if frame.size != first)
        raise ValueError(
            f"The PIL images of one video must share one size: frame 0 is {first[0]}x{first[1]}, frame {odd} is "
            f"{frames[odd].size[0]}x{frames[odd].size[1]}."
        )
    return np.stack([np.asarray(frame.convert("RGB")) for frame in frames])


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """`(N, H, W, 3)` uint8 -> `(N, 3, size, size)` uint8, bicubic and without keeping the aspect (SigLIP's resize)."""
    resized = np.empty((len(frames), 3, size, size), dtype=np.uint8)
    for index, frame in enumerate(frames):
        resized[index] = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC)).transpose(2, 0, 1)
    return resized
