"""The keyframe timeline picture: from the processor's output, for any video of a batch, and its input checks."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLIP_PATH
from vilamp.processing import plot_keyframes
from vilamp.tiny import tiny_model_and_processor


@pytest.fixture(scope="module")
def batch():
    _, processor = tiny_model_and_processor()
    prompts = ["<video>\nWhat is the rabbit doing?", "<video>\nIs it day or night?"]
    frames = np.random.default_rng(0).integers(0, 256, (9, 40, 60, 3), dtype=np.uint8)
    return processor, processor(text=prompts, videos=[str(CLIP_PATH), frames], num_keyframes=3, return_metadata=True)


@pytest.mark.parametrize("video_index", [0, 1])
def test_processor_plot_for_each_video_of_a_batch(batch, tmp_path, video_index):
    processor, inputs = batch
    path = processor.plot_keyframes(inputs, tmp_path / "timeline.png", video_index=video_index, question="q")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] == 1200 and image.size[1] >= 400
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas


def test_processor_plot_rejects_a_video_index_out_of_range(batch, tmp_path):
    processor, inputs = batch
    with pytest.raises(ValueError, match="video_index 2 is out of range for a batch of 2 videos"):
        processor.plot_keyframes(inputs, tmp_path / "timeline.png", video_index=2)


def test_plot_keyframes_checks_its_inputs(tmp_path):
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="frame_timestamps"):
        plot_keyframes(tmp_path / "a.png", [0.0, 1.0, 2.0], [0.1, 0.2], [0, 1], images)
    with pytest.raises(ValueError, match="keyframe_images"):
        plot_keyframes(tmp_path / "a.png", [0.0, 1.0, 2.0], [0.1, 0.2, 0.3], [0], images)
    with pytest.raises(ValueError, match="keyframe_indices must lie in"):
        plot_keyframes(tmp_path / "a.png", [0.0, 1.0, 2.0], [0.1, 0.2, 0.3], [0, 3], images)


def test_thumbnails_keep_the_videos_shape(tmp_path):
    # 9 keyframes, two rows of thumbnails: a 16:9 video's rows are shorter than a square video's.
    images = np.random.default_rng(1).integers(0, 256, (9, 3, 16, 16), dtype=np.uint8)
    heights = {}
    for name, aspect_ratio in (("square", None), ("wide", 16 / 9)):
        path = plot_keyframes(
            tmp_path / f"{name}.png", np.arange(12.0), np.linspace(0, 1, 12), np.arange(9), images,
            aspect_ratio=aspect_ratio,
        )  # fmt: skip
        with Image.open(path) as image:
            heights[name] = image.size[1]
    # Rows of 1.7 in against 12 / 8 / (16 / 9) + 0.35 = 1.19 in, at 100 dpi.
    assert heights["square"] - heights["wide"] == pytest.approx(2 * (1.7 - (1.5 * 9 / 16 + 0.35)) * 100, abs=2)


def test_gap_filling_flags_need_one_per_keyframe(tmp_path):
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="gap_filled"):
        plot_keyframes(tmp_path / "a.png", [0.0, 1.0, 2.0], [0.1, 0.2, 0.3], [0, 1], images, gap_filled=[True])
