"""
Many questions about one video: a prepared video and the model's `VilampVideoCache` give every question the keyframes,
tokens and logits of a fresh run, while the vision tower runs once per video.
"""

import numpy as np
import pytest
import torch

from conftest import CLIP_PATH, load_fixture, tiny_model
from vilamp.modeling_vilamp import VilampVideoCache


QUESTIONS = ("What is the rabbit doing?", "Where does it happen?", "Is it night?")


def prompt(question: str) -> str:
    return f"<|im_start|>user\n<video>\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def processor():
    from conftest import fixture_processor

    return fixture_processor(load_fixture("heavy-fill"), num_keyframes=3)


@pytest.fixture(scope="module")
def prepared(processor):
    return processor.prepare_video(str(CLIP_PATH))


def count_tower_frames(model) -> list[int]:
    """The frames of every vision tower run from now on."""
    runs: list[int] = []
    model.model.vision_tower.register_forward_pre_hook(lambda _module, args: runs.append(args[0].shape[0]))
    return runs


def test_cached_questions_equal_fresh_runs_and_run_the_tower_once(processor, prepared):
    model = tiny_model(seed=41)
    cache = VilampVideoCache()
    runs = count_tower_frames(model)
    for number, question in enumerate(QUESTIONS):
        inputs = processor(text=prompt(question), videos=prepared)
        with torch.no_grad():
            fresh = model(**inputs).logits
            fresh_runs = len(runs)
            cached = model(**inputs, video_cache=cache).logits
            cached_frames = sum(runs[fresh_runs:])
            fresh_tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=0)
            generate_runs = len(runs)
            cached_tokens = model.generate(
                **inputs, max_new_tokens=5, do_sample=False, pad_token_id=0, video_cache=cache
            )
        torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=0)
        assert cached_tokens.tolist() == fresh_tokens.tolist()
        # The first question runs the tower over the video's 6 frames once; the others (and generate) not at all.
        assert cached_frames == (len(prepared.frames) if number == 0 else 0)
        assert len(runs) == generate_runs
    assert len(cache) == 1
    assert cache.nbytes == len(prepared.frames) * 27 * 27 * model.config.vision_config.hidden_size * 4


def test_keys_tell_videos_and_samplings_apart(processor, prepared):
    again = processor.prepare_video(str(CLIP_PATH))
    fewer = processor.prepare_video(str(CLIP_PATH), num_frames=4)
    reversed_frames = processor.prepare_video(prepared.frames.transpose(0, 2, 3, 1)[::-1].copy())
    assert again.key == prepared.key
    assert len({prepared.key, fewer.key, reversed_frames.key}) == 3
    inputs = processor(text=[prompt("Where?")] * 2, videos=[prepared, fewer], padding=True)
    assert inputs["video_keys"] == [prepared.key, fewer.key]


def test_a_full_budget_evicts_the_least_recently_used_video(processor, prepared):
    model = tiny_model(seed=42)
    video_bytes = len(prepared.frames) * 27 * 27 * model.config.vision_config.hidden_size * 4
    cache = VilampVideoCache(max_bytes=video_bytes)
    other = processor.prepare_video(prepared.frames.transpose(0, 2, 3, 1)[::-1].copy())
    with torch.no_grad():
        for video in (prepared, other):
            model(**processor(text=prompt("Where?"), videos=video), video_cache=cache)
    assert len(cache) == 1 and cache.get(other.key, torch.float32) is not None
    assert cache.get(prepared.key, torch.float32) is None


def test_a_video_beyond_the_budget_is_answered_without_being_kept(processor, prepared):
    model = tiny_model(seed=43)
    cache = VilampVideoCache(max_bytes=1000)
    inputs = processor(text=prompt("Where?"), videos=prepared)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs, video_cache=cache).logits, model(**inputs).logits)
    assert len(cache) == 0


def test_offloaded_features_equal_fresh_runs(processor, prepared):
    model = tiny_model(seed=44)
    cache = VilampVideoCache(offload=True)
    inputs = processor(text=prompt("Where?"), videos=prepared)
    with torch.no_grad():
        model(**inputs, video_cache=cache)
        torch.testing.assert_close(
            model(**inputs, video_cache=cache).logits, model(**inputs).logits, atol=1e-5, rtol=0
        )
    assert cache.get(prepared.key, torch.float32).device.type == "cpu"


def test_another_model_gradients_or_missing_keys_are_refused(processor, prepared):
    inputs = processor(text=prompt("Where?"), videos=prepared)
    cache = VilampVideoCache()
    first, second = tiny_model(seed=45), tiny_model(seed=46)
    with torch.no_grad():
        first(**inputs, video_cache=cache)
        with pytest.raises(ValueError, match="another model"):
            second(**inputs, video_cache=cache)
        without_keys = {name: value for name, value in inputs.items() if name != "video_keys"}
        with pytest.raises(ValueError, match="needs `video_keys`"):
            first(**without_keys, video_cache=cache)
    with pytest.raises(ValueError, match="no_grad"):
        first(**inputs, video_cache=cache)
    first.model.vision_tower.requires_grad_(False)  # a frozen tower too: the frame scorer's gradients pass by it
    with pytest.raises(ValueError, match="no_grad"):
        first(**inputs, video_cache=cache)
    with pytest.raises(ValueError, match="max_bytes"):
        VilampVideoCache(max_bytes=-1)
    # Left out or None (the CLI, server and lmms-eval pass None when no budget is given): the documented 8 GiB.
    assert VilampVideoCache().max_bytes == VilampVideoCache(max_bytes=None).max_bytes == 8 * 2**30


def test_the_model_dtype_is_part_of_the_key(processor, prepared):
    model = tiny_model(seed=47)
    cache = VilampVideoCache()
    inputs = processor(text=prompt("Where?"), videos=prepared)
    with torch.no_grad():
        model(**inputs, video_cache=cache)
        model.to(torch.bfloat16)
        cached = model(**inputs, video_cache=cache).logits
        fresh = model(**inputs).logits
    assert len(cache) == 2
    assert np.array_equal(cached.float().numpy(), fresh.float().numpy())


def test_the_tower_runs_while_the_video_decodes_and_keeps_what_a_first_question_would(processor):
    model = tiny_model(seed=48, vision_chunk_size=4)
    filled, asked = VilampVideoCache(), VilampVideoCache()
    runs = count_tower_frames(model)
    filler = model.model.fill_video_cache(filled)
    ready_and_runs = []

    def on_frames(frames, ready):
        filler(frames, ready)
        ready_and_runs.append((ready, list(runs)))

    # Decoded 2 frames at a time, through the tower 4 at a time: the first 4 frames run while the last 2 decode.
    prepared = processor.prepare_video(str(CLIP_PATH), decode_chunk_size=2, on_frames=on_frames)
    assert ready_and_runs == [(2, []), (4, [4]), (6, [4, 2])]
    filler.keep(prepared.key)
    inputs = processor(text=prompt(QUESTIONS[0]), videos=prepared)
    with torch.no_grad():
        model(**inputs, video_cache=asked)  # a first question on a cache miss fills `asked` its own way
        assert torch.equal(filled.get(prepared.key, torch.float32), asked.get(prepared.key, torch.float32))
        before = len(runs)
        cached_tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=0, video_cache=filled)
        assert len(runs) == before  # answered from what the filler kept
        fresh_tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert cached_tokens.tolist() == fresh_tokens.tolist()


def test_the_filler_keeps_nothing_beyond_the_budget_or_for_a_video_already_prepared(processor, prepared):
    model = tiny_model(seed=49)
    runs = count_tower_frames(model)
    small = VilampVideoCache(max_bytes=1000)
    filler = model.model.fill_video_cache(small)
    again = processor.prepare_video(str(CLIP_PATH), on_frames=filler)
    filler.keep(again.key)
    assert len(small) == 0 and runs == []  # too large for the budget: the frames wait for their questions
    cache = VilampVideoCache()
    filler = model.model.fill_video_cache(cache)
    assert processor.prepare_video(prepared, on_frames=filler) is prepared  # nothing decoded, nothing run
    filler.keep(prepared.key)
    assert len(cache) == 0 and runs == []
