"""
Video decoding and frame sampling (docs/architecture.md, "Sampling").

A video is sampled at about one frame per second, then thinned uniformly to at most `max_frames`. For a video with a
constant frame rate this is the reference rule, every `int(native_fps)`-th frame; for a variable frame rate (phones,
screen recordings) a frame index says nothing about time, so the frames shown at 0 s, 1 s, 2 s, ... are kept instead,
read from the decoder's presentation times. Timestamps always come from those presentation times.

Frames are decoded a chunk at a time: the caller turns each native-resolution chunk into what it keeps (small frames,
embeddings) before the next one is decoded, so memory is bounded by the outputs, never by N native-resolution frames.

Files are decoded, upright (a phone video's rotation metadata is applied) and as RGB, by one of three backends:
torchcodec, PyAV or decord, the first that works here in that order (transformers' preference), or the one named.
They differ only in how they read the presentation times and decode frames: the frame table, the frame rate and so
the sampled indices are defined once, here. An http(s) URL is downloaded to a temporary file first.
"""

import http.client
import importlib
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


VideoInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Image.Image]
# Frame intervals within this fraction of the median interval are regular ones: encoders jitter timestamps by a few
# percent, while a dropped frame or a pause makes an interval of two or more.
FRAME_RATE_TOLERANCE = 0.5
# While every frame is within this of where its index puts it (index / native_fps), the reference's index rule still
# samples about once a second and is kept, for parity; past it (screen recordings, long pauses) frames are sampled by
# their presentation time.
MAX_INDEX_DRIFT_SECONDS = 0.5
# Container time bases quantise timestamps (to a millisecond in Matroska and WebM), so a 30 fps video can measure
# 29.997 fps; a measured rate within this fraction of a standard one is taken to be it. Half the gap between 30 and
# NTSC's 30000/1001, so that the two stay apart.
STANDARD_RATE_TOLERANCE = 5e-4
# Presentation times are kept to the microsecond: backends compute seconds from the same integer timestamps in
# different orders, and the frame table must not depend on which one read it. (decord's 32-bit floats still drift
# from the others, by up to 0.1 ms an hour into a video.)
TIMESTAMP_DECIMALS = 6
BACKENDS = ("torchcodec", "pyav", "decord")  # transformers' order of preference, which "auto" follows
DOWNLOAD_TIMEOUT_SECONDS = 60  # without a byte from the server
DOWNLOAD_CHUNK_BYTES = 1 << 20


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


def sample_at_rate(
    timestamps: np.ndarray | None, num_frames: int, native_fps: float, fps: float, max_frames: int | None
) -> np.ndarray:
    """
    About `fps` frames per second of a video, at most `max_frames`: the reference rule while frame indices tell the
    time (`timestamps` None: evenly spaced by definition), else by presentation time.
    """
    if timestamps is None or indices_tell_time(timestamps, native_fps):
        return sample_frame_indices(num_frames, native_fps, fps, max_frames)
    return sample_frames_by_time(timestamps, fps, max_frames)


def indices_tell_time(timestamps: np.ndarray, native_fps: float) -> bool:
    """Whether every frame is presented within `MAX_INDEX_DRIFT_SECONDS` of `index / native_fps`."""
    drift = np.abs(timestamps - np.arange(len(timestamps)) / native_fps)
    return bool(drift.max() <= MAX_INDEX_DRIFT_SECONDS)


def measured_frame_rate(timestamps: np.ndarray) -> float:
    """
    Frames per second over sorted `timestamps` (0 for a single instant), snapped to a standard rate (a whole number,
    or NTSC's n * 1000 / 1001) within `STANDARD_RATE_TOLERANCE`, so that `int(native_fps)` is the reference's step.
    The mean of the regular frame intervals is measured: a dropped frame or a pause leaves a long interval that would
    pull a plain frames-over-duration rate below the container's, and with it `int(native_fps)` below the
    reference's step.
    """
    intervals = np.diff(timestamps)
    if len(intervals) == 0 or not intervals.max() > 0:
        return 0.0
    median = float(np.median(intervals))
    regular = intervals[np.abs(intervals - median) <= FRAME_RATE_TOLERANCE * median]
    measured = 1.0 / float((regular if regular.size and regular.mean() > 0 else intervals).mean())
    for standard in (round(measured), round(measured * 1.001) / 1.001):
        if standard > 0 and abs(measured - standard) <= STANDARD_RATE_TOLERANCE * standard:
            return float(standard)
    return measured


class VideoSource:
    """
    A video opened for decoding: its name for messages, its frames' presentation times in seconds from the first
    frame, and its native frame rate.
    """

    backend: str | None = None  # the decoder of a file; None for frames given in memory

    def __init__(self, name: str, timestamps: np.ndarray, native_fps: float):
        self.name = name
        self.timestamps = timestamps
        self.native_fps = native_fps

    @property
    def num_frames(self) -> int:
        return len(self.timestamps)

    def iter_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        """Yields the frames at the increasing `indices`, `chunk_size` at a time, as `(n, H, W, 3)` uint8 RGB."""
        raise NotImplementedError


class DecodedVideo(VideoSource):
    """Frames already in memory, `(N, H, W, 3)` uint8, taken to be `fps` frames per second."""

    def __init__(self, frames: np.ndarray, fps: float):
        super().__init__("(decoded frames)", np.arange(len(frames)) / fps, fps)
        self.frames = frames

    def iter_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        for chunk in chunks_of(indices, chunk_size):
            yield self.frames[chunk]


class VideoFile(VideoSource):
    """
    A video file, with its frame table built here from the presentation times that a backend reads; a subclass per
    backend reads those times (`_read_frame_times`) and decodes frames (`_decode_chunks`) upright as RGB.
    """

    backend: str  # the name that `open_video` takes
    module: str  # what a working install can import
    install: str  # how to install it

    def __init__(self, path: Path, name: str | None = None):
        """Reads the frame table of the file at `path`; `name` (the path by default) is what messages call it."""
        self.path, self.name = path, name or str(path)
        try:
            seconds, nominal_fps = self._read_frame_times()
        except self._errors() as error:
            raise ValueError(f"Cannot read video {self.name}: {_reason(error)} ({self.backend}).") from error
        super().__init__(self.name, *frame_table(seconds, nominal_fps, self.name))

    def iter_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        try:
            yield from self._decode_chunks(indices, chunk_size)
        except self._errors() as error:
            raise ValueError(
                f"Cannot decode frames of video {self.name}: {_reason(error)} ({self.backend})."
            ) from error

    @classmethod
    def problem(cls) -> str | None:
        """Why this backend cannot decode here (not installed, or failing to load), or None when it can."""
        try:
            importlib.import_module(cls.module)
        except Exception as error:
            # Absent, or present but failing to load: a missing shared library or dependency, a build for another torch
            absent = isinstance(error, ModuleNotFoundError) and error.name == cls.module
            return "it is not installed" if absent else f"it fails to load ({_reason(error)})"
        return None

    def _read_frame_times(self) -> tuple[np.ndarray, float]:
        """Presentation times in seconds of every frame, sorted, and the container's nominal frame rate."""
        raise NotImplementedError

    def _decode_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _errors(self) -> tuple[type[Exception], ...]:
        """The exceptions by which the backend reports an unreadable file."""
        raise NotImplementedError


def frame_table(seconds: np.ndarray, nominal_fps: float, name: str) -> tuple[np.ndarray, float]:
    """
    Timestamps from the first frame, and the native frame rate, of a video whose frames are presented at the sorted
    `seconds`. The rate is measured from the timestamps, so that every backend agrees; only a single frame, which has
    no rate, takes the container's `nominal_fps`.
    """
    if len(seconds) == 0:
        raise ValueError(f"Video {name} has zero frames.")
    timestamps = np.round(np.asarray(seconds, dtype=np.float64) - seconds[0], TIMESTAMP_DECIMALS)
    native_fps = measured_frame_rate(timestamps) or float(nominal_fps or 0)
    if not native_fps > 0:
        raise ValueError(f"Video {name} has one frame and no usable frame rate (reported {nominal_fps}).")
    return timestamps, native_fps


def chunks_of(indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
    """`indices` in consecutive runs of `chunk_size` (the last may be shorter)."""
    for start in range(0, len(indices), chunk_size):
        yield indices[start : start + chunk_size]


class PyAVFile(VideoFile):
    """PyAV (FFmpeg bundled in its wheel): times from the packets, frames matched to the table by presentation time."""

    backend, module, install = "pyav", "av", "pip install av"

    def _read_frame_times(self) -> tuple[np.ndarray, float]:
        import av

        with av.open(str(self.path)) as container:
            stream = _best_video_stream(container, self.name)
            # Presentation times of every frame, from the packets alone (no decoding).
            self._pts, num_packets = _packet_pts(container, stream)
            time_base, rate = stream.time_base, float(stream.average_rate or stream.guessed_rate or 0)
        if num_packets == 0:
            return np.zeros(0), rate
        if self._pts is None:
            # A raw stream without timestamps: frames are counted, and only the nominal rate tells their times.
            if not rate > 0:
                raise ValueError(f"Video {self.name} has no timestamps and no usable frame rate (reported {rate}).")
            return np.arange(num_packets) / rate, rate
        return self._pts * float(time_base), rate

    def _decode_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        chunk: list[np.ndarray] = []
        for frame in self._decode_frames(indices):
            chunk.append(frame)
            if len(chunk) == chunk_size:
                yield np.stack(chunk)
                chunk = []
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
            stream = _best_video_stream(container, self.name)
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
            "(and any after it) could not be decoded (pyav)."
        )

    def _frame_index(self, frame, position: int) -> int:
        """Index of a decoded frame in the frame table; -1 for a frame the table does not hold."""
        if self._pts is None:
            return position
        # Matched by timestamp, not by counting: a decoder that drops a damaged frame must not shift every later
        # frame by one.
        index = int(np.searchsorted(self._pts, frame.pts)) if frame.pts is not None else -1
        return index if 0 <= index < len(self._pts) and self._pts[index] == frame.pts else -1

    def _errors(self) -> tuple[type[Exception], ...]:
        import av

        return (av.FFmpegError,)


class TorchCodecFile(VideoFile):
    """
    torchcodec (FFmpeg's shared libraries of the system): times from its packet scan, frames by index in its exact
    seek mode, whose indices follow the same scan. It applies the rotation itself.
    """

    backend, module = "torchcodec", "torchcodec"
    install = "pip install 'vilamp-transformers[torchcodec]', and FFmpeg 4 to 9 with its shared libraries"

    @classmethod
    def problem(cls) -> str | None:
        problem = super().problem()
        if problem is not None:
            return problem
        import torchcodec
        from torchcodec import decoders

        # The scan that gives every frame's time (`Demuxer`) came in 0.17. Since 0.16 torchcodec imports without
        # FFmpeg, and says so here; older versions fail to import instead.
        if not hasattr(decoders, "Demuxer"):
            return f"version {torchcodec.__version__} is older than 0.17"
        if torchcodec.ffmpeg_major_version is None:
            return "it found no FFmpeg shared libraries (libavcodec, libavformat, ...)"
        return None

    def _read_frame_times(self) -> tuple[np.ndarray, float]:
        from torchcodec.decoders import Demuxer

        demuxer = Demuxer(str(self.path))
        frame_index = demuxer.streams[0].scan()
        return frame_index.pts_seconds.numpy(), float(demuxer.streams[0].metadata.average_fps_from_header or 0)

    def _decode_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        from torchcodec.decoders import VideoDecoder

        if len(indices) == 0:
            return
        # num_ffmpeg_threads=0: FFmpeg picks the thread count, as transformers' torchcodec loader does.
        decoder = VideoDecoder(str(self.path), dimension_order="NHWC", num_ffmpeg_threads=0, seek_mode="exact")
        for chunk in chunks_of(indices, chunk_size):
            yield decoder.get_frames_at(chunk.tolist()).data.numpy()

    def _errors(self) -> tuple[type[Exception], ...]:
        # torchcodec reports FFmpeg's failures as RuntimeError, and a file without a video stream as ValueError.
        return (RuntimeError, ValueError)


class DecordFile(VideoFile):
    """decord (FFmpeg 4.1 bundled in its wheel): times and frames by index from one reader. It applies the rotation."""

    backend, module, install = "decord", "decord", "pip install 'vilamp-transformers[decord]'"

    def _read_frame_times(self) -> tuple[np.ndarray, float]:
        from decord import VideoReader, cpu

        self._reader = VideoReader(str(self.path), ctx=cpu(0))
        # (start, end) seconds of each frame, as 32-bit floats.
        times = self._reader.get_frame_timestamp(range(len(self._reader)))
        return times[:, 0].astype(np.float64), float(self._reader.get_avg_fps())

    def _decode_chunks(self, indices: np.ndarray, chunk_size: int) -> Iterator[np.ndarray]:
        for chunk in chunks_of(indices, chunk_size):
            yield self._reader.get_batch(chunk.tolist()).asnumpy()

    def _errors(self) -> tuple[type[Exception], ...]:
        from decord import DECORDError

        return (RuntimeError, DECORDError)


FILE_BACKENDS: dict[str, type[VideoFile]] = {cls.backend: cls for cls in (TorchCodecFile, PyAVFile, DecordFile)}


def file_backend(backend: str) -> type[VideoFile]:
    """
    The backend class named `backend`, or for "auto" the first of `BACKENDS` that works here (torchcodec without
    FFmpeg's libraries is passed over quietly). Raises `ValueError` naming a backend that is unknown or cannot work.
    """
    check_backend_name(backend)
    if backend == "auto":
        for cls in FILE_BACKENDS.values():
            if cls.problem() is None:
                return cls
        raise ValueError(f"No video decoding backend works here: install one, e.g. `{PyAVFile.install}`.")
    cls = FILE_BACKENDS[backend]
    problem = cls.problem()
    if problem is not None:
        raise ValueError(f"Video backend {backend!r} cannot be used: {problem}. Install it with `{cls.install}`.")
    return cls


def check_backend_name(backend: str) -> None:
    """Raises `ValueError` naming `backend` unless it is "auto" or one of `BACKENDS`."""
    if backend != "auto" and backend not in FILE_BACKENDS:
        raise ValueError(f"Unknown video backend {backend!r}: choose 'auto' or one of {', '.join(BACKENDS)}.")


def _best_video_stream(container, name: str):
    # FFmpeg's best video stream, as torchcodec and decord pick it, so that all backends read the same one.
    if not container.streams.video:
        raise ValueError(f"{name} has no video stream.")
    return container.streams.best("video")


def _packet_pts(container, stream) -> tuple[np.ndarray | None, int]:
    """Sorted presentation timestamps of the stream's frames (packets come in decoding order), and the packet count;
    the timestamps are None when some packet has none. Frames that an edit list hides (the lead-in that a cut without
    re-encoding keeps for decoding) are not the video's: FFmpeg decodes them but never returns them."""
    pts = [packet.pts for packet in container.demux(stream) if packet.size > 0 and not packet.is_discard]
    if any(value is None for value in pts):
        return None, len(pts)
    return np.unique(np.asarray(pts, dtype=np.int64)), len(pts)


def _upright_rgb(frame) -> np.ndarray:
    """The frame as `(H, W, 3)` uint8 RGB, turned as its display matrix says (phones store portrait video sideways)."""
    rgb = frame.to_ndarray(format="rgb24")
    # `rotation` is the display matrix's counter-clockwise angle; FFmpeg's players turn the picture by it.
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns)) if quarter_turns else rgb


# Where in its C++ sources a backend failed, which the user needs no more than its log's clock: torchcodec writes
# "function, file.cpp:93, ", decord "[12:00:00] file.cc:151: " and "Check failed: <condition> ERROR ".
_SOURCE_LOCATION = re.compile(r"^(\[[\d:]+\] |\w+, )?\S+\.(cc|cpp):\d+[:,] (Check failed: .*? ERROR )?")


def _reason(error: Exception) -> str:
    """The first line of a backend's error message, without its source location."""
    message = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
    return _SOURCE_LOCATION.sub("", message.splitlines()[0]).rstrip(".")


def is_url(video) -> bool:
    """Whether `video` is an http(s) URL: a str, never a path (a path would turn "http://" into "http:/")."""
    return isinstance(video, str) and video[:8].lower().startswith(("http://", "https://"))


def download(url: str) -> Path:
    """
    Streams `url` to a temporary file, a chunk at a time; the caller deletes it. Raises `ValueError` naming the URL
    on an HTTP error, a timeout or a broken connection, leaving no file behind.
    """
    handle, name = tempfile.mkstemp(prefix="vilamp-video-", suffix=Path(urllib.parse.urlparse(url).path).suffix)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as answer:
            shutil.copyfileobj(answer, file, DOWNLOAD_CHUNK_BYTES)
    except BaseException as error:
        path.unlink(missing_ok=True)
        # urllib's errors and timeouts are OSErrors, a cut connection an HTTPException, a malformed URL a ValueError.
        if not isinstance(error, (OSError, http.client.HTTPException, ValueError)):
            raise
        reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", None) or error
        raise ValueError(f"Cannot download video {url}: {reason}") from error
    return path


def open_url(url: str, backend: type[VideoFile]) -> VideoFile:
    """Downloads `url` once (PyAV reads a file twice: packet scan, then decoding) and opens the download."""
    path = download(url)
    try:
        source = backend(path, name=url)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    # The download lives as long as the source that decodes it: gone when the caller drops it, or at exit.
    weakref.finalize(source, path.unlink, missing_ok=True)
    return source


def open_video(video: VideoInput, decoded_fps: float = 1.0, backend: str = "auto") -> VideoSource:
    """
    Opens a video file or an http(s) URL with `backend` ("auto", "torchcodec", "pyav" or "decord"), or wraps already
    decoded frames: an `(N, H, W, 3)` uint8 array or tensor, or a list of PIL images of one size. Decoded frames are
    taken to be at `decoded_fps` frames per second.
    """
    check_backend_name(backend)  # even for decoded frames, which need no backend: a typo is a typo
    if is_url(video):
        return open_url(video, file_backend(backend))
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if not path.is_file():
            mangled_url = str(path).lower().startswith(("http:/", "https:/"))
            hint = " (an http(s) URL must be given as a str: a path turns its // into /)" if mangled_url else ""
            raise FileNotFoundError(f"Video file not found: {path}{hint}")
        return file_backend(backend)(path)
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
