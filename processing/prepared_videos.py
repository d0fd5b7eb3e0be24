"""
Prepared videos kept for the next question about them: the training data, the lmms-eval model and `vilamp serve`
each keep the last few videos after the processor's video-only step (`VilampProcessor.prepare_video`), so that a
video asked about again is not decoded and scored again.
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

from .video_processing_vilamp import PreparedVideo


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """
    A file's resolved path, size and modification time (ns): part of a prepared video's key, so that a file changed
    since it was prepared is prepared again. Raises `FileNotFoundError` naming the path.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such video file: {path}") from error
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


class PreparedVideos:
    """
    The last `max_videos` prepared videos, least recently used first out. Safe to share between threads;
    a video is prepared outside the lock, so two threads may prepare the same video at once (both get an equal one).

    Args:
        max_videos: videos kept; each holds its sampled frames at the tower's size as uint8 (600 frames at 384 px
            are 265 MB). 0 keeps none.
    """

    def __init__(self, max_videos: int = 4):
        if isinstance(max_videos, bool) or not isinstance(max_videos, int) or max_videos < 0:
            raise ValueError(f"`max_videos` must be a non-negative integer, got {max_videos!r}.")
        self.max_videos = max_videos
        self._videos: OrderedDict[Hashable, PreparedVideo] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._videos)

    def __getstate__(self) -> dict:
        # Each process keeps its own: shipping decoded videos to DataLoader workers costs more than decoding.
        return {"max_videos": self.max_videos}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_videos"])

    def get(self, identity: Hashable, settings: Mapping, prepare: Callable[[], PreparedVideo]) -> PreparedVideo:
        """
        The video kept for `identity` (which file or content) under the processor keyword arguments `settings`, or
        `prepare()`'s result, which is then kept. The settings (max_frames, fps, ...) decide which frames are kept, so
        they are part of the key.
        """
        key = (identity, repr(sorted(settings.items())))
        with self._lock:
            prepared = self._videos.get(key)
            if prepared is not None:
                self._videos.move_to_end(key)
                return prepared
        prepared = prepare()
        with self._lock:
            self._videos[key] = prepared
            self._videos.move_to_end(key)
            while len(self._videos) > self.max_videos:
                self._videos.popitem(last=False)
        return prepared
