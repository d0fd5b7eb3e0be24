"""
Bad and unusual input, family by family: video files, decoded frames, text and settings, model inputs and saved
directories (conversion sources and the command line have their own in test_conversion.py and test_cli.py).

Every case ends in either a correct result, checked, or one clear error whose message names the input at fault.
"""

import json
import math
import shutil
import threading

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import SafetensorError
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import CLIP_PATH, FIXTURE_VIDEO_TOKEN_ID, tiny_model
from media import numbered_frames, write_video
from vilamp.processing import num_visual_tokens


PROMPT = "<|im_start|>user\n<video>\n{}<|im_end|>\n<|im_start|>assistant\n"


# --- video files ------------------------------------------------------------------------------------------------


def write_bytes(name: str, data: bytes):
    def make(directory):
        path = directory / name
        path.write_bytes(data)
        return path

    return make


VIDEO_FILE_CASES = {
    "missing": (lambda d: d / "missing.mp4", r"missing\.mp4"),
    "directory": (lambda d: (d / "folder.mp4").mkdir() or d / "folder.mp4", r"folder\.mp4"),
    "empty file": (write_bytes("empty.mp4", b""), r"empty\.mp4"),
    "text file": (write_bytes("notes.mp4", b"this is not a video\n" * 20), r"notes\.mp4"),
    "random bytes": (write_bytes("noise.mkv", bytes(np.random.default_rng(0).integers(0, 256, 4096))), "noise"),
    "truncated": (write_bytes("cut.mp4", CLIP_PATH.read_bytes()[:40_000]), r"cut\.mp4"),
    "png image": (lambda d: Image.new("RGB", (8, 8)).save(d / "still.png") or d / "still.png", None),
}


@pytest.mark.parametrize("case", list(VIDEO_FILE_CASES))
def test_video_files(tmp_path, heavy_fill_processor, case):
    make, message = VIDEO_FILE_CASES[case]
    path = make(tmp_path)
    if message is None:  # FFmpeg reads a still image as a one-frame video: that is a valid (if short) video
        batch = heavy_fill_processor(text=PROMPT.format("What is it?"), videos=str(path))
        assert batch["video_frame_counts"].tolist() == [1] and batch["keyframe_mask"].tolist() == [True]
        return
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        heavy_fill_processor(text=PROMPT.format("What is it?"), videos=str(path))


# --- decoded frames ---------------------------------------------------------------------------------------------


FRAME_CASES = {
    "float frames in 0..255": (np.full((3, 8, 8, 3), 200.0, dtype=np.float32), r"uint8.*astype"),
    "int64 frames": (np.zeros((3, 8, 8, 3), dtype=np.int64), r"uint8"),
    "bool frames": (np.zeros((3, 8, 8, 3), dtype=bool), r"uint8"),
    "grey frames without a channel axis": (np.zeros((3, 8, 8), dtype=np.uint8), r"\(N, H, W, 3\)"),
    "no frames": (np.zeros((0, 8, 8, 3), dtype=np.uint8), "zero frames"),
    "zero-height frames": (np.zeros((2, 0, 8, 3), dtype=np.uint8), "empty"),
    "empty list": ([], "1 <video> placeholders .* and 0 videos"),
    "PIL images of two sizes": ([Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))], r"frame 1 is 9x8"),
    "PIL images and an array": ([Image.new("RGB", (8, 8)), np.zeros((8, 8, 3), np.uint8)], r"item 1 is ndarray"),
    "a number": (7, "Unsupported video input of type int"),
    "1x1 frames": (np.full((2, 1, 1, 3), 90, dtype=np.uint8), None),
    "grey and RGBA PIL images": ([Image.new("L", (5, 7)), Image.new("RGBA", (5, 7))], None),
    "tensor frames": (torch.zeros(2, 6, 10, 3, dtype=torch.uint8), None),
    # transformers' layouts: channels first (as torch tensors usually are), RGBA (alpha dropped) and grey.
    "channels-first frames": (torch.zeros(2, 3, 6, 10, dtype=torch.uint8), None),
    "RGBA frames": (np.zeros((2, 8, 8, 4), dtype=np.uint8), None),
    "grey frames with a channel axis": (np.zeros((2, 8, 8, 1), dtype=np.uint8), None),
}


@pytest.mark.parametrize("case", list(FRAME_CASES))
def test_decoded_frames(heavy_fill_processor, case):
    video, message = FRAME_CASES[case]
    if message is not None:
        with pytest.raises(ValueError, match=message):
            heavy_fill_processor(text=PROMPT.format("What is it?"), videos=video)
        return
    batch = heavy_fill_processor(text=PROMPT.format("What is it?"), videos=video)
    assert batch["pixel_values_videos"].shape == (2, 3, 54, 54)
    assert batch["keyframe_mask"].all()  # two frames, K = 8: both are keyframes


# --- text and settings ------------------------------------------------------------------------------------------


FRAMES = numbered_frames(12, 16, 16)
SETTING_CASES = {
    "fps 0": ({"fps": 0}, "`fps`"),
    "negative fps": ({"fps": -1.0}, "`fps`"),
    "NaN fps": ({"fps": float("nan")}, "`fps`"),
    "infinite fps": ({"fps": math.inf}, "`fps`"),
    "fps as text": ({"fps": "1"}, "field 'fps'"),
    "max_frames 0": ({"max_frames": 0}, "`max_frames`"),
    "negative max_frames": ({"max_frames": -4}, "`max_frames`"),
    "fractional max_frames": ({"max_frames": 2.5}, "field 'max_frames'"),
    "num_keyframes 0": ({"num_keyframes": 0}, "`num_keyframes`"),
    "fractional num_keyframes": ({"num_keyframes": 2.5}, "field 'num_keyframes'"),
    "num_keyframes True": ({"num_keyframes": True}, "field 'num_keyframes'"),
    "empty query": ({"query": ""}, "`query`"),
    "blank query": ({"query": "   \n"}, "`query`"),
    "query per video, wrong count": ({"query": ["a", "b"]}, "`query` gives 2 questions for 1 videos"),
    "query as a number": ({"query": [5]}, "field 'query'"),  # transformers' own check of typed keyword arguments
    "images": ({"images": [Image.new("RGB", (4, 4))]}, "`images`"),
    "text as a number": ({"text": 5}, "`text`"),
    "no prompt at all": ({"text": []}, "`text`"),
    "prompt without a question": ({"text": "<video>"}, "No question found"),
    "prompt without a placeholder": ({"text": "What is it?"}, r"0 <video> placeholders"),
}


@pytest.mark.parametrize("case", list(SETTING_CASES))
def test_text_and_settings(heavy_fill_processor, case):
    change, message = SETTING_CASES[case]
    arguments = {"text": PROMPT.format("What is it?"), "videos": FRAMES, **change}
    # Values of the wrong type are refused by transformers' typed processor kwargs, whose errors name the field.
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        heavy_fill_processor(**arguments)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fps=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 30)),
    max_frames=st.one_of(st.none(), st.integers(-3, 20)),
    num_keyframes=st.integers(-2, 20),
)
def test_any_sampling_settings_give_a_valid_batch_or_name_the_setting(
    heavy_fill_processor, fps, max_frames, num_keyframes
):
    arguments = {"fps": fps, "max_frames": max_frames, "num_keyframes": num_keyframes}
    valid_fps = math.isfinite(fps) and fps > 0
    valid = valid_fps and (max_frames is None or max_frames >= 1) and num_keyframes >= 1
    if not valid:
        with pytest.raises(ValueError, match="`fps`|`max_frames`|`num_keyframes`"):
            heavy_fill_processor(text=PROMPT.format("Where?"), videos=FRAMES, **arguments)
        return
    batch = heavy_fill_processor(text=PROMPT.format("Where?"), videos=FRAMES, **arguments)
    # Decoded frames are taken to be at `fps`, so every frame is sampled, then thinned to max_frames.
    expected_frames = min(12, max_frames or 12)
    assert batch["video_frame_counts"].tolist() == [expected_frames]
    keyframes = int(batch["keyframe_mask"].sum())
    assert keyframes == min(num_keyframes, expected_frames)
    assert (
        int((batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).sum()) == 196 * keyframes + expected_frames - keyframes + 1
    )


def test_one_processor_from_four_threads(heavy_fill_processor):
    """
    Batches of prompts of different lengths and single prompts from 4 threads at once: each call gets its own,
    padded result. (Text alone keeps each call short, so that calls overlap as often as possible.)
    """
    prompts = ["Where?", "What does the rabbit do after the long pause in the middle of the film? " * 10]
    expected = {True: heavy_fill_processor(text=prompts), False: heavy_fill_processor(text=prompts[0])}
    failures = []

    def work(batched: bool):
        for _ in range(300):
            try:
                got = heavy_fill_processor(text=prompts if batched else prompts[0])
                assert all(torch.equal(got[key], expected[batched][key]) for key in expected[batched])
            except Exception as error:  # collected and reported below: a failure in a thread does not fail pytest
                failures.append(error)

    threads = [threading.Thread(target=work, args=(index % 2 == 0,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


# --- model inputs -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=21)


def model_inputs(model, frames: torch.Tensor) -> dict:
    num_frames = frames.shape[0]
    return {
        "input_ids": torch.tensor(
            [
                [
                    5,
                    6,
                    *([FIXTURE_VIDEO_TOKEN_ID] * num_visual_tokens(num_frames, 1, model.model.tokens_per_keyframe)),
                    8,
                ]
            ]
        ),
        "pixel_values_videos": frames,
        "keyframe_mask": torch.tensor([True] + [False] * (num_frames - 1)),
        "query_embeds": torch.randn(1, 16, generator=torch.Generator().manual_seed(0)),
    }


def uint8_frames() -> torch.Tensor:
    return torch.randint(0, 256, (3, 3, 54, 54), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def normalised(frames: torch.Tensor) -> torch.Tensor:
    return (frames.float() / 255 - 0.5) / 0.5


MODEL_INPUT_CASES = {
    "integer query": ({"query_embeds": torch.ones(1, 16, dtype=torch.long)}, "`query_embeds`"),
    "frames without channels": ({"pixel_values_videos": torch.zeros(3, 54, 54, dtype=torch.uint8)}, "pixel_values"),
    "keyframe mask too short": ({"keyframe_mask": torch.tensor([True, False])}, "`keyframe_mask`"),
    "negative frame count": ({"video_frame_counts": torch.tensor([4, -1])}, "`video_frame_counts`"),
}


@pytest.mark.parametrize("case", list(MODEL_INPUT_CASES))
def test_model_inputs(model, case):
    change, message = MODEL_INPUT_CASES[case]
    inputs = {**model_inputs(model, uint8_frames()), **change}
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_normalised_float_frames_equal_uint8_frames(model):
    frames = uint8_frames()
    with torch.no_grad():
        from_uint8 = model(**model_inputs(model, frames)).logits
        from_float = model(**model_inputs(model, normalised(frames))).logits
    torch.testing.assert_close(from_float, from_uint8)


# --- saved directories ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, model):
    directory = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(directory)
    return directory


def edit_config(change):
    def apply(directory):
        config = json.loads((directory / "config.json").read_text())
        change(config)
        (directory / "config.json").write_text(json.dumps(config))

    return apply


SAVED_DIRECTORY_CASES = {
    "config without text_config": (edit_config(lambda c: c.pop("text_config")), "text_config"),
    "config without vision_config": (edit_config(lambda c: c.pop("vision_config")), "vision_config"),
    "pooling stride as text": (
        edit_config(lambda c: c.update(keyframe_pooling_stride="two")),
        "keyframe_pooling_stride",
    ),
    "negative vision chunk": (edit_config(lambda c: c.update(vision_chunk_size=-3)), "vision_chunk_size"),
    "hidden size as text": (edit_config(lambda c: c["text_config"].update(hidden_size="x")), "hidden_size"),
    "config not JSON": (lambda d: (d / "config.json").write_text('{"model_type": "vilamp", '), "config.json"),
    "truncated weights": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
        "deserializing header",  # safetensors' own error, as for any transformers model; the CLI names the file
    ),
    "weights missing": (lambda d: (d / "model.safetensors").unlink(), r"model\.safetensors"),
}


def tampered_copy(saved, tamper, directory):
    """A copy of the saved directory `saved` at `directory`, changed by `tamper`."""
    shutil.copytree(saved, directory)
    tamper(directory)
    return directory


@pytest.mark.parametrize("case", list(SAVED_DIRECTORY_CASES))
def test_saved_model_directories(tmp_path, saved_model, case):
    tamper, message = SAVED_DIRECTORY_CASES[case]
    directory = tampered_copy(saved_model, tamper, tmp_path / "model")
    # Config fields are checked by huggingface_hub's strict dataclasses, whose errors name the field.
    with pytest.raises((OSError, ValueError, StrictDataclassError, SafetensorError), match=message):
        AutoModelForImageTextToText.from_pretrained(directory)


@pytest.fixture(scope="module")
def saved_processor(tmp_path_factory, heavy_fill_processor):
    directory = tmp_path_factory.mktemp("saved") / "processor"
    heavy_fill_processor.save_pretrained(directory)
    return directory


PROCESSOR_DIRECTORY_CASES = {
    "scorer weights missing": (lambda d: (d / "frame_scorer.safetensors").unlink(), r"frame_scorer\.safetensors"),
    "scorer config missing": (lambda d: (d / "frame_scorer_config.json").unlink(), r"frame_scorer_config\.json"),
    "scorer config not JSON": (lambda d: (d / "frame_scorer_config.json").write_text("{"), r"frame_scorer_config"),
    "scorer weights truncated": (
        lambda d: (d / "frame_scorer.safetensors").write_bytes(b"\x10\x00\x00\x00"),
        r"frame_scorer\.safetensors",
    ),
}


@pytest.mark.parametrize("case", list(PROCESSOR_DIRECTORY_CASES))
def test_saved_processor_directories(tmp_path, saved_processor, case):
    tamper, message = PROCESSOR_DIRECTORY_CASES[case]
    directory = tampered_copy(saved_processor, tamper, tmp_path / "processor")
    with pytest.raises((OSError, ValueError), match=message):
        AutoProcessor.from_pretrained(directory)


def test_real_world_video_through_processor_and_model(tmp_path, heavy_fill_processor):
    """An odd-sized, variable-frame-rate file goes all the way to the model's logits."""
    times = [0.0, 0.5, 0.6, 2.4, 2.5, 4.9]
    path = write_video(tmp_path / "odd.mp4", numbered_frames(len(times), 38, 70), times=times)
    batch = heavy_fill_processor(text=PROMPT.format("What colour?"), videos=str(path), return_metadata=True)
    # On screen at 0, 1, 2, 3 and 4 s: the frames shown from 0.0, 0.6 (twice) and 2.5 s (twice).
    assert batch.pop("video_metadata")[0].timestamps == [0.0, 0.6, 2.5]
    model = tiny_model(seed=22)
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()
