"""select_keyframes: the released algorithm on the fixtures, and its invariants on random inputs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import relevance_threshold
from vilamp.processing.keyframes import fill_gaps, frame_relevance, greedy_keyframes, select_keyframes, unit_rows


def test_fixture_masks(parity_case):
    outputs, case = parity_case["outputs"], parity_case["case"]
    mask = select_keyframes(
        outputs["clip_image_embeds"],
        outputs["clip_text_embeds"],
        case["keyframes"],
        case["f2f_thrd"],
        relevance_threshold(case),
    )
    assert mask.dtype == torch.bool
    assert mask.long().tolist() == outputs["keyframe_mask"].tolist()
    torch.testing.assert_close(
        frame_relevance(outputs["clip_image_embeds"], outputs["clip_text_embeds"]), outputs["relevance"]
    )


def test_fixture_greedy_pass_leaves_gaps_to_fill(parity_case):
    """The fixtures exercise gap filling: the greedy pass alone picks fewer than K."""
    outputs, case = parity_case["outputs"], parity_case["case"]
    greedy = select_keyframes(
        outputs["clip_image_embeds"],
        outputs["clip_text_embeds"],
        case["keyframes"],
        case["f2f_thrd"],
        relevance_threshold(case),
        fill_remaining=False,
    )
    assert int(greedy.sum()) < case["keyframes"]
    assert bool((greedy <= outputs["keyframe_mask"].bool()).all())


def test_gap_filling_by_hand():
    # 10 frames, frame 4 selected, 3 slots left: gaps [0..3] and [5..9]. Spacing 3 needs 1 + 1 = 2 slots,
    # spacing 2 needs 1 + 2 = 3: so D = 2, placing frames 0 + 2 = 2, then 5 + 2 = 7 and 5 + 4 = 9.
    selected = np.zeros(10, dtype=bool)
    selected[4] = True
    assert np.flatnonzero(fill_gaps(selected, 4)).tolist() == [2, 4, 7, 9]


def test_relevance_floor_stops_the_greedy_pass():
    embeds = torch.eye(4)
    query = torch.tensor([1.0, 0.5, 0.0, 0.0])
    chosen = greedy_keyframes(unit_rows(embeds), frame_relevance(embeds, query), 4, 0.9, relevance_threshold=0.3)
    assert chosen == [0, 1]


embeddings = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.integers(1, 12),
        st.floats(0.0, 0.99),
        st.integers(0, 2**31 - 1),
        st.sampled_from([1, 2, 4]),
    )
)


def random_case(n, dim_groups, seed):
    """Embeddings with runs of near-duplicates, so that redundancy matters."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(dim_groups, 8, generator=generator)
    groups = torch.randint(0, dim_groups, (n,), generator=generator)
    embeds = centres[groups] + 0.05 * torch.randn(n, 8, generator=generator)
    return embeds, torch.randn(8, generator=generator)


@settings(max_examples=200, deadline=None)
@given(embeddings)
def test_properties(case):
    n, k, threshold, seed, groups = case
    embeds, query = random_case(n, groups, seed)
    mask = select_keyframes(embeds, query, k, threshold)
    assert int(mask.sum()) == min(k, n)
    greedy = greedy_keyframes(unit_rows(embeds), frame_relevance(embeds, query), k, threshold)
    assert all(mask[frame] for frame in greedy)
    assert torch.equal(mask, select_keyframes(embeds.clone(), query.clone(), k, threshold))


def test_video_shorter_than_k_selects_every_frame():
    embeds = torch.ones(5, 8)  # all identical: the greedy pass picks one, filling picks the rest
    assert select_keyframes(embeds, torch.ones(8), 32, 0.85).all()


def test_hundred_thousand_frames():
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(100_000, 512, generator=generator)
    mask = select_keyframes(embeds, torch.randn(512, generator=generator), 32, 0.85)
    assert mask.shape == (100_000,) and int(mask.sum()) == 32


@pytest.mark.parametrize(
    ("embeds", "query", "k", "message"),
    [
        (torch.zeros(0, 8), torch.ones(8), 4, "num_frames >= 1"),
        (torch.ones(3, 8), torch.ones(4), 4, "query_embed"),
        (torch.ones(3, 8), torch.ones(8), 0, "num_keyframes"),
    ],
)
def test_bad_inputs(embeds, query, k, message):
    with pytest.raises(ValueError, match=message):
        select_keyframes(embeds, query, k, 0.85)
