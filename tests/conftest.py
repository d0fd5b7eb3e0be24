"""
Shared helpers: tiny configs, and the parity fixtures (original-layout checkpoints with recorded outputs).

Under `pytest -n N`, the controller process imports this file too, and runs no test: nothing here imports torch or
this project at module level, so that the workers start without waiting about 8 s for those imports. Each helper
imports what it needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest


if TYPE_CHECKING:
    import torch

    from vilamp.modeling_vilamp import VilampConfig, VilampForConditionalGeneration


def pytest_configure(config: pytest.Config) -> None:
    """
    Under `pytest -n N`, each worker runs torch on its share of the cores, and so do the processes its tests start
    (OMP_NUM_THREADS is inherited). With every worker on all the cores, two workers on 2 cores ran twice as many
    threads as cores, and OpenMP's waiting threads spun on the cores the other worker needed: the model tests took
    100 s with 2 threads per worker and 50 s with 1 (test_modeling_vilamp, the transformers model suite and the
    training parity tests, `-n 2` on 2 cores).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # set by pytest-xdist in each worker
    if workers > 1:
        # The cores this process may run on; macOS has no sched_getaffinity.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_CASES = ("partial-fill", "heavy-fill", "relevance-floor")
# The fixtures' tokenizer has 499 ids; `<video>` takes the first spare row of the 512-row embedding.
FIXTURE_VIDEO_TOKEN_ID = 499


def tiny_config(**overrides) -> VilampConfig:
    """A random-weight ViLAMP small enough for CPU tests, with the real 27x27 patch grid."""
    from vilamp.modeling_vilamp import VilampConfig
    from vilamp.tiny import TINY_TEXT_CONFIG, TINY_VISION_CONFIG

    settings = {
        "vision_config": TINY_VISION_CONFIG,
        "text_config": {**TINY_TEXT_CONFIG, "vocab_size": 512},
        "query_embed_dim": 16,
        "video_token_id": FIXTURE_VIDEO_TOKEN_ID,
        "num_keyframes": 4,
    }
    settings.update(overrides)
    return VilampConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> VilampForConditionalGeneration:
    import torch

    from vilamp.modeling_vilamp import VilampForConditionalGeneration

    torch.manual_seed(seed)
    return VilampForConditionalGeneration(tiny_config(**overrides)).eval()


def video_training_batch(keyframe_mask: torch.Tensor, seed: int) -> dict:
    """
    One training example for `tiny_model`: random 54 px frames (keyframes where `keyframe_mask` says), a prompt of
    the video's placeholders between a few tokens, and 4 answer tokens as the only labels.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    num_frames, num_keyframes = keyframe_mask.shape[0], int(keyframe_mask.sum())
    num_visual = 196 * num_keyframes + (num_frames - num_keyframes) + 1  # 14 x 14 pooled tokens per keyframe
    input_ids = torch.tensor([[5, 6, *([FIXTURE_VIDEO_TOKEN_ID] * num_visual), 8, 9, 10, 11]])
    labels = torch.full_like(input_ids, -100)
    labels[0, -4:] = input_ids[0, -4:]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "pixel_values_videos": torch.randint(0, 256, (num_frames, 3, 54, 54), dtype=torch.uint8, generator=generator),
        "keyframe_mask": keyframe_mask,
        "query_embeds": torch.randn(1, 16, generator=generator),
    }


def load_fixture(name: str) -> dict:
    """The original config, weights, inputs and recorded outputs of one parity case."""
    from safetensors.torch import load_file

    case_dir = FIXTURES / name
    return {
        "dir": case_dir,
        "case": json.loads((case_dir / "case.json").read_text()),
        "config": json.loads((case_dir / "config.json").read_text()),
        "weights": load_file(case_dir / "model.safetensors"),
        "inputs": load_file(case_dir / "inputs.safetensors"),
        "outputs": load_file(case_dir / "outputs.safetensors"),
    }


def fixture_model(fixture: dict) -> VilampForConditionalGeneration:
    """The fixture's original checkpoint mapped onto `VilampForConditionalGeneration` (float32, eval)."""
    from vilamp.conversion.checkpoint_mapping import (
        convert_original_config,
        count_vision_layers,
        split_original_state_dict,
    )
    from vilamp.modeling_vilamp import VilampConfig, VilampForConditionalGeneration

    weights = fixture["weights"]
    config = VilampConfig(
        **convert_original_config(fixture["config"], count_vision_layers(weights), FIXTURE_VIDEO_TOKEN_ID)
    )
    model = VilampForConditionalGeneration(config)
    state = {key: tensor for where, key, tensor in split_original_state_dict(weights.items()) if where == "model"}
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="session", params=FIXTURE_CASES)
def parity_case(request) -> dict:
    return load_fixture(request.param)


CLIP_PATH = FIXTURES / "videos" / "bigbuckbunny.mp4"  # (c) Blender Foundation, CC BY 3.0; see fixtures/videos


def fixture_frame_scorer(fixture: dict):
    """The fixture's CLIP frame scorer, converted from transformers' layout to open_clip's as the converter does."""
    from vilamp.conversion.checkpoint_mapping import FRAME_SCORER_PREFIX
    from vilamp.conversion.convert_vilamp_to_hf import build_frame_scorer

    clip_weights = {
        key[len(FRAME_SCORER_PREFIX) :]: tensor
        for key, tensor in fixture["weights"].items()
        if key.startswith(FRAME_SCORER_PREFIX)
    }
    return build_frame_scorer(fixture["config"], clip_weights)


def fixture_tokenizer(fixture: dict):
    """The fixture's tiny Qwen-style tokenizer with `<video>` added (id 499, the first spare embedding row)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixture["dir"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<video>"]})
    assert tokenizer.convert_tokens_to_ids("<video>") == FIXTURE_VIDEO_TOKEN_ID
    return tokenizer


def relevance_threshold(case: dict) -> float | None:
    """A case's `f2t_thrd` as our `keyframe_relevance_threshold`: the original's -1 turns the floor off, ours None."""
    return None if case["f2t_thrd"] == -1 else case["f2t_thrd"]


def fixture_processor(fixture: dict, **overrides):
    """A processor with the fixture's tokenizer, frame scorer and selection settings, at the tiny tower's 54 px."""
    from vilamp.processing import VilampProcessor, VilampVideoProcessor

    settings = {
        "num_keyframes": fixture["case"]["keyframes"],
        "keyframe_similarity_threshold": fixture["case"]["f2f_thrd"],
        "keyframe_relevance_threshold": relevance_threshold(fixture["case"]),
        "video_processor": VilampVideoProcessor(size={"height": 54, "width": 54}),
    }
    settings.update(overrides)
    return VilampProcessor(
        tokenizer=fixture_tokenizer(fixture), frame_scorer=fixture_frame_scorer(fixture), **settings
    )


PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("modeling_vilamp", "processing", "conversion", "vilamp")


def run_without_project(script: str, workdir: Path):
    """
    Runs `script` in a fresh Python where none of this project's packages can be imported, as for a Hub user with
    only transformers installed: the project root leaves `sys.path` and an editable install's finder is dropped.
    """
    import subprocess
    import sys
    import textwrap

    prelude = textwrap.dedent(
        f"""
        import importlib.util, os, sys
        sys.path = [p for p in sys.path if os.path.abspath(p or ".") != {str(PROJECT_ROOT)!r}]
        sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
        for name in {PROJECT_PACKAGES!r}:
            assert importlib.util.find_spec(name) is None, name + " must not be importable here"
        """
    )
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(workdir / "modules")}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=workdir, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def heavy_fill_processor():
    """The heavy-fill fixture's processor (K = 8, 54 px), shared by tests that only read from it."""
    return fixture_processor(load_fixture("heavy-fill"))
