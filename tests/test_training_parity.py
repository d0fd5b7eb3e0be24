"""
One training step against the original's (`training.safetensors` of each parity fixture): the loss, every model
gradient, and the frame scorer's gradients through the straight-through path, named with the converter's routing.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from conftest import FIXTURE_VIDEO_TOKEN_ID, fixture_frame_scorer, fixture_model
from vilamp.conversion.checkpoint_mapping import (
    FRAME_SCORER_PREFIX,
    convert_frame_scorer_state_dict,
    split_original_state_dict,
)
from vilamp.conversion.verify_conversion import ORIGINAL_IMAGE_INDEX, expand_image_index
from vilamp.processing import num_visual_tokens
from vilamp.training.scorer import VilampWithFrameScorer


def recorded_step(fixture: dict) -> dict:
    return load_file(fixture["dir"] / "training.safetensors")


def training_inputs(fixture: dict, model) -> dict:
    """The recorded step's inputs: the video slot expanded to the visual sequence, with -100 labels on it."""
    step, inputs = recorded_step(fixture), fixture["inputs"]
    keyframe_mask = fixture["outputs"]["keyframe_mask"].bool()
    num_visual = num_visual_tokens(keyframe_mask.shape[0], int(keyframe_mask.sum()), model.model.tokens_per_keyframe)
    ids = step["input_ids_with_image_index"]
    labels = step["labels_with_image_index"][0]
    position = int((ids[0] == ORIGINAL_IMAGE_INDEX).nonzero()[0])
    expanded_labels = torch.cat([labels[:position], torch.full((num_visual,), -100), labels[position + 1 :]])
    return {
        "input_ids": expand_image_index(ids, num_visual, FIXTURE_VIDEO_TOKEN_ID),
        "labels": expanded_labels[None],
        "pixel_values_videos": inputs["siglip_pixel_values"],
        "keyframe_mask": keyframe_mask,
        "scorer_pixel_values": inputs["clip_pixel_values"],
        # open_clip's tokens: padded with 0 to the 77-token context (it pools at the end-of-text token).
        "scorer_input_ids": F.pad(inputs["clip_input_ids"], (0, 77 - inputs["clip_input_ids"].shape[1])),
    }


def recorded_gradients(step: dict) -> tuple[dict, dict]:
    """The original's gradients, named as this model's parameters and as the open_clip scorer's."""
    gradients = {key.removeprefix("grad."): tensor for key, tensor in step.items() if key.startswith("grad.")}
    model = {key: tensor for where, key, tensor in split_original_state_dict(gradients.items()) if where == "model"}
    scorer = convert_frame_scorer_state_dict(
        {key[len(FRAME_SCORER_PREFIX) :]: g for key, g in gradients.items() if key.startswith(FRAME_SCORER_PREFIX)}
    )
    return model, scorer


def assert_gradients_match(parameters: dict, expected: dict, tolerance: float) -> None:
    """Every expected gradient is there, within `tolerance` of its tensor's scale (its largest magnitude)."""
    assert expected, "no recorded gradients"
    for name, gradient in expected.items():
        mine = parameters[name].grad
        assert mine is not None, f"{name} received no gradient"
        scale = max(float(gradient.abs().max()), 1e-12)
        difference = float((mine.reshape(gradient.shape) - gradient).abs().max())
        assert difference <= tolerance * scale, f"{name}: off by {difference:.3g} at scale {scale:.3g}"


@pytest.fixture
def training_step(parity_case):
    """The fixture's model and scorer after one forward and backward on the recorded inputs."""
    model = fixture_model(parity_case).train()
    scorer = fixture_frame_scorer(parity_case).model.train()
    wrapper = VilampWithFrameScorer(model, scorer)
    output = wrapper(**training_inputs(parity_case, model))
    output.loss.backward()
    return parity_case, model, scorer, output.loss


def test_loss_matches_original(training_step):
    fixture, _, _, loss = training_step
    torch.testing.assert_close(loss.detach(), recorded_step(fixture)["loss"][0], atol=1e-5, rtol=0)


def test_model_gradients_match_original(training_step):
    fixture, model, _, _ = training_step
    expected, _ = recorded_gradients(recorded_step(fixture))
    assert_gradients_match(dict(model.named_parameters()), expected, tolerance=5e-5)


def test_frame_scorer_gradients_match_original(training_step):
    """The straight-through factors and the query embedding carry the loss back into CLIP, as in the original."""
    fixture, _, scorer, _ = training_step
    _, expected = recorded_gradients(recorded_step(fixture))
    assert_gradients_match(dict(scorer.named_parameters()), expected, tolerance=1e-3)


def test_bf16_autocast_trains_and_generates():
    """Under CPU bf16 autocast the chunk's tokens come out in bf16 and are written into the float32 sequence."""
    from conftest import tiny_model, video_training_batch

    model = tiny_model(seed=3).train()
    batch = video_training_batch(torch.tensor([False, True, False, True, False]), seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**batch)
    output.loss.backward()
    assert output.logits.dtype == torch.bfloat16 and torch.isfinite(output.loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.model.feature_merger.parameters())
    with torch.no_grad():
        float_loss = model(**batch).loss
    # bf16 keeps about 3 significant digits; the loss of a 512-token vocabulary is about 6.
    torch.testing.assert_close(output.loss.detach(), float_loss, atol=0.05, rtol=0)
    prompt = {name: value for name, value in batch.items() if name != "labels"}
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        generated = model.eval().generate(**prompt, max_new_tokens=3, pad_token_id=0)
    assert generated.shape == (1, batch["input_ids"].shape[1] + 3)


def test_trainer_predict_returns_logits_only(tmp_path):
    """`Trainer.predict` gathers the logits alone: not the key/value cache, not the visual sequence."""
    from transformers import Trainer, TrainingArguments

    from conftest import tiny_model, video_training_batch

    model = tiny_model(seed=61)
    batch = video_training_batch(torch.tensor([True, False, False, True, False]), seed=62)
    arguments = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=1, report_to="none")
    trainer = Trainer(model=model, args=arguments, data_collator=lambda examples: examples[0])
    predictions = trainer.predict([batch]).predictions
    with torch.no_grad():
        logits = model(**batch).logits
    assert isinstance(predictions, np.ndarray)  # one array, not a tuple with the cache and video features
    np.testing.assert_allclose(predictions, logits.numpy(), atol=1e-6, rtol=0)
