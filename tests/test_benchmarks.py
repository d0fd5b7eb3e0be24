"""The benchmark harness's own correctness: its baseline selects the same frames, its video is what it says."""

import pytest
import torch

from benchmarks.measure import NUM_KEYFRAMES, SIMILARITY_THRESHOLD, dense_similarity_keyframes, siglip_flops_per_frame
from benchmarks.synthetic_video import make_video
from vilamp.modeling_vilamp import VilampConfig
from vilamp.processing import select_keyframes
from vilamp.processing.video_decoding import open_video, sample_frame_indices


@pytest.mark.parametrize("seed", range(4))
def test_dense_matrix_baseline_selects_the_same_keyframes(seed):
    generator = torch.Generator().manual_seed(seed)
    # Scenes of near-duplicate frames, so that the similarity threshold matters.
    centres = torch.randn(12, 64, generator=generator)
    embeds = centres.repeat_interleave(50, dim=0) + 0.3 * torch.randn(600, 64, generator=generator)
    query = torch.randn(64, generator=generator)
    expected = select_keyframes(embeds, query, NUM_KEYFRAMES, SIMILARITY_THRESHOLD)
    assert torch.equal(dense_similarity_keyframes(embeds, query), expected)


def test_siglip_cost_of_the_released_tower():
    # The figure for SigLIP so400m at 384 px is about 0.69 TFLOP per frame (27 layers; 26 are kept).
    assert 0.62e12 < siglip_flops_per_frame(VilampConfig()) < 0.70e12


def test_synthetic_video_is_h264_at_2_fps(tmp_path):
    path = make_video(tmp_path / "video.mp4", num_seconds=6)
    source = open_video(str(path))
    assert source.num_frames == 12 and source.native_fps == 2.0
    indices = sample_frame_indices(source.num_frames, source.native_fps, 1.0, None)
    assert len(indices) == 6
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (640, 360)
