"""Sampling and chunked decoding, on the bundled Big Buck Bunny clip (c) Blender Foundation, CC BY 3.0."""

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLIP_PATH
from media import frame_colour, numbered_frames, rotate_in_container, write_video
from vilamp.processing.video_decoding import open_video, resize_frames, sample_frame_indices


def test_reference_sampling_rule():
    # Every int(fps)-th frame, then numpy.linspace thinning to max_frames.
    assert sample_frame_indices(132, 25.0, 1.0, None).tolist() == [0, 25, 50, 75, 100, 125]
    assert sample_frame_indices(132, 25.0, 1.0, 4).tolist() == [0, 25, 75, 125]
    assert sample_frame_indices(10, 0.5, 1.0, None).tolist() == list(range(10))  # below 1 fps: every frame
    assert sample_frame_indices(100, 30.0, 2.0, None).tolist() == list(range(0, 100, 15))


def pyav_frames(path, indices):
    """An independent decoder: PyAV, every frame, keeping the wanted ones."""
    wanted = set(int(i) for i in indices)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in wanted]
    return np.stack(frames)


def test_real_clip_decodes_like_pyav():
    source = open_video(CLIP_PATH)
    assert (source.num_frames, source.native_fps) == (132, 25.0)
    indices = source.sample(1.0, None)
    assert indices.tolist() == [0, 25, 50, 75, 100, 125]
    assert source.timestamps[indices].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    decoded = np.concatenate(list(source.iter_chunks(indices, chunk_size=4)))
    assert decoded.shape == (6, 720, 1280, 3)
    reference = pyav_frames(CLIP_PATH, indices)
    # Two FFmpeg builds may round YUV->RGB differently by a step or two; the pictures are the same.
    assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 1.0


def test_chunked_decoding_equals_decoding_at_once():
    source = open_video(CLIP_PATH)
    indices = source.sample(2.0, None)
    chunked = np.concatenate(list(source.iter_chunks(indices, chunk_size=3)))
    whole = np.concatenate(list(source.iter_chunks(indices, chunk_size=len(indices))))
    assert np.array_equal(chunked, whole)


def test_resize_is_bicubic_without_aspect():
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    resized = resize_frames(frames, 54)
    assert resized.shape == (2, 3, 54, 54) and resized.dtype == np.uint8
    expected = np.asarray(Image.fromarray(frames[1]).resize((54, 54), Image.BICUBIC)).transpose(2, 0, 1)
    assert np.array_equal(resized[1], expected)


def test_decoded_inputs():
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    for video in (frames, torch.from_numpy(frames), [Image.fromarray(f) for f in frames]):
        source = open_video(video)
        assert source.num_frames == 3
        assert np.concatenate(list(source.iter_chunks(np.array([0, 2]), 8))).shape == (2, 8, 8, 3)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_video(tmp_path / "nope.mp4")


def test_corrupt_file(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="corrupt.mp4"):
        open_video(corrupt)


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "zero frames"),
        ([], "zero frames"),
        (np.zeros((2, 8, 8), dtype=np.uint8), r"\(N, H, W, 3\) uint8"),
        (np.zeros((2, 8, 8, 3), dtype=np.float32), r"\(N, H, W, 3\) uint8"),
        (42, "Unsupported video input"),
    ],
)
def test_bad_decoded_inputs(video, message):
    with pytest.raises(ValueError, match=message):
        open_video(video)


# Real-world files, made with PyAV by tests/media.py.


def decode_all(source, indices):
    return np.concatenate(list(source.iter_chunks(np.asarray(indices), chunk_size=4)))


def upright_portrait() -> np.ndarray:
    """A portrait picture whose orientation is unmistakable: red top, blue bottom, a green stripe on the left."""
    picture = np.zeros((64, 32, 3), dtype=np.uint8)
    picture[:32], picture[32:], picture[:, :8] = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    return picture


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_phone_video_with_rotation_metadata_comes_out_upright(tmp_path, degrees):
    picture = upright_portrait()
    # A phone stores the sensor's picture and a display matrix saying how to turn it for viewing.
    stored = np.rot90(picture, k=degrees // 90)
    path = rotate_in_container(write_video(tmp_path / "phone.mp4", np.stack([stored] * 5)), degrees)
    frames = decode_all(open_video(path), [0, 4])
    assert frames.shape == (2, 64, 32, 3)
    assert np.abs(frames.astype(int) - picture).mean() < 8  # lossy H.264; a wrong turn is off by ~100


def test_variable_frame_rate_uses_presentation_times(tmp_path):
    # A screen recording: bursts of frames, then a frame held for seconds.
    times = [0.0, 0.1, 0.2, 1.85, 2.0, 2.05, 7.0, 7.5, 9.9]
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(len(times), 32, 32), times=times)
    source = open_video(path)
    np.testing.assert_allclose(source.timestamps, times, atol=1e-9)
    # The frame on screen at 0 s, 1 s, 2 s, ...: each once.
    indices = source.sample(1.0, None)
    assert indices.tolist() == [0, 2, 4, 5, 6, 7]
    frames = decode_all(source, indices)
    for frame, index in zip(frames, indices, strict=True):
        assert np.abs(frame[16, 16].astype(int) - frame_colour(index)).max() < 12
    # Thinned as the reference does: numpy.linspace(0, 5, 3, dtype=int) = [0, 2, 5] of the six.
    assert source.sample(1.0, 3).tolist() == [0, 4, 7]


def test_processor_reports_variable_frame_rate_times(tmp_path, heavy_fill_processor):
    times = [0.0, 0.1, 0.2, 1.85, 2.0, 2.05, 7.0, 7.5, 9.9]
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(len(times), 32, 32), times=times)
    batch = heavy_fill_processor(text="<video>\nWhat changes?", videos=str(path))
    assert batch["frame_timestamps"].tolist() == [0.0, 0.2, 2.0, 2.05, 7.0, 7.5]


def test_constant_frame_rate_keeps_the_reference_index_rule(tmp_path):
    # 29.97 fps: the reference keeps every int(29.97) = 29th frame, not the frame nearest to each second.
    path = write_video(
        tmp_path / "ntsc.mp4", numbered_frames(100, 16, 16), times=[n * 1001 / 30000 for n in range(100)]
    )
    source = open_video(path)
    assert source.sample(1.0, None).tolist() == [0, 29, 58, 87]
    np.testing.assert_allclose(source.timestamps[[0, 29]], [0.0, 29 * 1001 / 30000], atol=1e-3)


@pytest.mark.parametrize(
    ("name", "height", "width", "codec", "pixel_format"),
    [
        ("av1.mkv", 64, 64, "libsvtav1", "yuv420p"),
        ("one-pixel.mkv", 1, 1, "ffv1", "yuv444p"),
        ("two-pixels.mp4", 2, 2, "libx264", "yuv420p"),
        ("odd-size.mkv", 7, 13, "ffv1", "yuv444p"),
        ("odd-size.mp4", 74, 98, "libx264", "yuv420p"),
    ],
)
def test_unusual_codecs_and_sizes_decode(tmp_path, name, height, width, codec, pixel_format):
    path = write_video(tmp_path / name, numbered_frames(30, height, width), codec=codec, pixel_format=pixel_format)
    source = open_video(path)
    assert source.num_frames == 30
    indices = source.sample(1.0, None)
    assert indices.tolist() == [0, 25]
    frames = decode_all(source, indices)
    assert frames.shape == (2, height, width, 3)
    for frame, index in zip(frames, indices, strict=True):
        assert np.abs(frame[0, 0].astype(int) - frame_colour(index)).max() < 12


def test_audio_only_file_is_named(tmp_path):
    path = tmp_path / "speech.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(ValueError, match=r"speech\.wav has no video stream"):
        open_video(path)


def test_truncated_file_names_the_file(tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(CLIP_PATH.read_bytes()[: CLIP_PATH.stat().st_size // 5])
    with pytest.raises(ValueError, match="truncated.mp4"):
        source = open_video(truncated)
        decode_all(source, source.sample(1.0, None))
