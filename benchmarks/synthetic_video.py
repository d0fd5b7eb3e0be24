"""Long H.264 test videos made on the spot with PyAV, so that nothing large is committed."""

from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm


SCENE_SECONDS = 90


def scene_background(scene: int, height: int, width: int) -> np.ndarray:
    """A smooth two-colour gradient per scene: frames of one scene look alike, scenes differ."""
    rng = np.random.default_rng(scene)
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    row = (start + (end - start) * ramp).astype(np.uint8)
    return np.broadcast_to(row, (height, width, 3)).copy()


def draw_frame(second: int, background: np.ndarray) -> np.ndarray:
    """The scene's background with a square that moves a little every second."""
    frame = background.copy()
    height, width, _ = frame.shape
    size = height // 5
    x = (second * 37) % (width - size)
    y = (second * 23) % (height - size)
    frame[y : y + size, x : x + size] = (255 - background[y, x]).astype(np.uint8)
    return frame


def make_video(path: Path, num_seconds: int, fps: int = 2, width: int = 640, height: int = 360) -> Path:
    """Writes an H.264 video of `num_seconds` at `fps` (so 1 fps sampling keeps every `fps`-th frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(4 * fps)}
        background, scene = None, -1
        for index in tqdm(range(num_seconds * fps), desc=f"writing {path.name}", unit="frame", leave=False):
            second = index // fps
            if second // SCENE_SECONDS != scene:
                scene = second // SCENE_SECONDS
                background = scene_background(scene, height, width)
            frame = av.VideoFrame.from_ndarray(draw_frame(second, background), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def cached_video(directory: Path, num_seconds: int) -> Path:
    path = directory / f"synthetic-{num_seconds}s.mp4"
    return path if path.is_file() else make_video(path, num_seconds)
