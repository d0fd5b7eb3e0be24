"""
Videos made at test time with PyAV, as real-world files come: phone videos with rotation metadata, variable frame
rates, AV1 in Matroska, tiny and odd frame sizes; and a file with audio but no video. Each frame shows its number as
a colour, so tests can tell which frame a decoder returned.
"""

import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_colour(number: int) -> np.ndarray:
    """A colour that identifies frame `number` after lossy encoding (channels far apart)."""
    return np.array([(number * 40) % 256, (number * 90 + 60) % 256, 255 - (number * 40) % 256], dtype=np.uint8)


def numbered_frames(count: int, height: int, width: int) -> np.ndarray:
    """`(count, height, width, 3)` uint8 frames, each filled with `frame_colour` of its number."""
    return np.stack([np.broadcast_to(frame_colour(n), (height, width, 3)) for n in range(count)]).copy()


def write_video(
    path: Path,
    frames: np.ndarray,
    times: Sequence[float] | None = None,
    fps: int = 25,
    codec: str = "libx264",
    pixel_format: str = "yuv420p",
    options: dict | None = None,
) -> Path:
    """
    Encodes `(N, H, W, 3)` uint8 RGB frames. `times` (seconds) give each frame's presentation time for a variable
    frame rate; without them the frames are `1 / fps` apart.
    """
    time_base = Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pixel_format
        stream.codec_context.time_base = time_base
        for number, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            seconds = times[number] if times is not None else number / fps
            frame.pts, frame.time_base = round(seconds * 1000), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def rotate_in_container(path: Path, degrees_clockwise: int) -> Path:
    """
    Writes the display matrix that a phone writes into an MP4's track header: a player turns the stored picture
    `degrees_clockwise` (90, 180 or 270) to show it upright.
    """
    one, minus_one = 0x00010000, 0xFFFF0000
    a, b, c, d = {90: (0, one, minus_one, 0), 180: (minus_one, 0, 0, minus_one), 270: (0, minus_one, one, 0)}[
        degrees_clockwise
    ]
    data = bytearray(path.read_bytes())
    header = data.index(b"tkhd")
    version = data[header + 4]
    # After the box type: version/flags (4), times and ids (20 or 32 bytes by version), reserved (8), layer,
    # alternate group, volume, reserved (2 each).
    matrix = header + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    data[matrix : matrix + 36] = struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def write_audio_only(path: Path) -> Path:
    """A WAV file: a container that any decoder opens, with no video stream in it."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def cut_without_reencoding(path: Path, cut: Path, seconds: float) -> Path:
    """
    Cuts the first `seconds` off an MP4 as `ffmpeg -ss SECONDS -c copy` does: the packets before the cut stay, since
    later frames are decoded from them, at negative times that the new file's edit list hides from players.
    """
    with av.open(str(path)) as source, av.open(str(cut), "w") as target:
        stream = source.streams.video[0]
        copy = target.add_stream_from_template(stream)
        shift = round(seconds / stream.time_base)
        for packet in source.demux(stream):
            if packet.dts is None:  # the demuxer's closing empty packet
                continue
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
            target.mux(packet)
    return cut
