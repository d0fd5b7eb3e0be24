"""
Long videos of real footage, made on the spot: the bundled Big Buck Bunny excerpt ((c) Blender Foundation,
www.bigbuckbunny.org, CC BY 3.0), encoded once at the size asked for (H.264, 25 fps) and repeated by copying its
packets with shifted timestamps, so that an hour of video costs one 5 s encode. Decoding it costs what decoding real
footage of that size costs, unlike a synthetic picture, which compresses to almost nothing.
"""

import math
from fractions import Fraction
from pathlib import Path

import av

from vilamp.tiny import BUNDLED_CLIP


FRAME_RATE = 25


def encode_clip(width: int, height: int) -> tuple[list[tuple[bytes, int, int, bool]], int, bytes]:
    """The bundled clip re-encoded at `width` x `height`: packets (data, pts, dts, keyframe), frames, extradata."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, FRAME_RATE), Fraction(FRAME_RATE)
    # x264 at a web upload's quality; every repetition starts with a keyframe, as a cut of real footage would.
    encoder.options = {"preset": "veryfast", "crf": "23"}
    packets, count = [], 0
    with av.open(str(BUNDLED_CLIP)) as source:
        for frame in source.decode(source.streams.video[0]):
            frame = frame.reformat(width=width, height=height, format="yuv420p")
            frame.pts, frame.time_base = count, encoder.time_base
            packets += encoder.encode(frame)
            count += 1
    packets += encoder.encode(None)
    return [(bytes(p), p.pts, p.dts, p.is_keyframe) for p in packets], count, encoder.extradata


def make_looped_video(path: Path, num_seconds: int, width: int, height: int) -> Path:
    """Writes at least `num_seconds` of the bundled clip at `width` x `height`, repeated without re-encoding."""
    packets, clip_frames, extradata = encode_clip(width, height)
    repetitions = math.ceil(num_seconds * FRAME_RATE / clip_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    time_base = Fraction(1, FRAME_RATE)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=FRAME_RATE)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.extradata = extradata
        for repetition in range(repetitions):
            shift = repetition * clip_frames
            for data, pts, dts, is_keyframe in packets:
                packet = av.Packet(data)
                packet.pts, packet.dts, packet.time_base = pts + shift, dts + shift, time_base
                packet.is_keyframe, packet.stream = is_keyframe, stream
                container.mux(packet)
    partial.rename(path)
    return path


def cached_looped_video(directory: Path, num_seconds: int, width: int, height: int) -> Path:
    """`make_looped_video` once per length and size, kept in `directory`."""
    path = directory / f"footage-{width}x{height}-{num_seconds}s.mp4"
    return path if path.is_file() else make_looped_video(path, num_seconds, width, height)
