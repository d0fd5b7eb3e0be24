"""Sampling and chunked decoding, on the bundled Big Buck Bunny clip (c) Blender Foundation, CC BY 3.0."""

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLIP_PATH
from processing.video_decoding import iter_frame_chunks, open_video, resize_frames, sample_frame_indices


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
    indices = sample_frame_indices(source.num_frames, source.native_fps, 1.0, None)
    decoded = np.concatenate(list(iter_frame_chunks(source, indices, chunk_size=4)))
    assert decoded.shape == (6, 720, 1280, 3)
    reference = pyav_frames(CLIP_PATH, indices)
    # Two FFmpeg builds may round YUV->RGB differently by a step or two; the pictures are the same.
    assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 1.0


def test_chunked_decoding_equals_decoding_at_once():
    source = open_video(CLIP_PATH)
    indices = sample_frame_indices(source.num_frames, source.native_fps, 2.0, None)
    chunked = np.concatenate(list(iter_frame_chunks(source, indices, chunk_size=3)))
    whole = np.concatenate(list(iter_frame_chunks(source, indices, chunk_size=len(indices))))
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
        assert source.read(np.array([0, 2])).shape == (2, 8, 8, 3)


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
