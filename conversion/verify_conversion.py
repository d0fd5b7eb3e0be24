"""
Checks a converted directory against its source checkpoint (`--verify`).

1. Reloads the output with `AutoModelForImageTextToText` / `AutoProcessor` (`trust_remote_code=True`, so the code
   files written beside the weights are what runs).
2. Every model tensor equals its source tensor in the stored dtype.
3. The frame scorer, now open_clip, gives the embeddings of a transformers `CLIPModel` built from the source weights.
4. On a random video, the reloaded model's logits equal those of a model assembled in memory from the source.
5. When the source is a parity fixture (inputs.safetensors and outputs.safetensors beside the weights), the outputs
   the original implementation recorded are reproduced: CLIP embeddings, keyframes, logits and greedy tokens.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel

from ..modeling_vilamp import VilampConfig, VilampForConditionalGeneration
from ..processing import num_visual_tokens, select_keyframes
from .checkpoint_mapping import check_frame_scorer_tensors, split_original_state_dict, transformers_clip_config
from .original_checkpoint import ConversionError, iter_original_tensors, list_weight_files, read_original_config


# Agreement the parity fixtures ask for in float32 (their README); weights and same-code logits must be exact.
FIXTURE_TOLERANCE = 1e-4
ORIGINAL_IMAGE_INDEX = -200


class VerificationError(ConversionError):
    """The converted directory does not reproduce its source."""


@dataclass
class VerificationReport:
    """One row per check: its name, the measured figure, and whether it passed."""

    rows: list[tuple[str, str, bool]] = field(default_factory=list)

    def add(self, check: str, figure: str, passed: bool) -> None:
        self.rows.append((check, figure, passed))

    @property
    def passed(self) -> bool:
        return all(passed for _, _, passed in self.rows)

    def lines(self) -> list[str]:
        width = max(len(check) for check, _, _ in self.rows)
        return [f"{'ok' if passed else 'FAIL':4}  {check:{width}}  {figure}" for check, figure, passed in self.rows]


def count_model_parameters(output: Path) -> int:
    """Parameters of the converted model, read from its safetensors headers."""
    total = 0
    for weight_file in sorted(Path(output).glob("model*.safetensors")):
        with safe_open(weight_file, framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return total


def expand_image_index(input_ids: torch.Tensor, num_placeholders: int, video_token_id: int) -> torch.Tensor:
    """Replaces the original's -200 image index in `(1, L)` ids by `num_placeholders` copies of `video_token_id`."""
    ids = input_ids[0]
    positions = (ids == ORIGINAL_IMAGE_INDEX).nonzero()
    if positions.shape[0] != 1:
        raise ValueError(f"Expected one {ORIGINAL_IMAGE_INDEX} image index in the prompt, found {positions.shape[0]}.")
    position = int(positions[0])
    placeholder = torch.full((num_placeholders,), video_token_id, dtype=ids.dtype)
    return torch.cat([ids[:position], placeholder, ids[position + 1 :]])[None]


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _check_weights(source: Path, model, report: VerificationReport) -> tuple[dict, dict]:
    """Compares every model tensor with its source; returns the source model and frame scorer tensors."""
    converted = model.state_dict()
    model_tensors, scorer_tensors = {}, {}
    mismatched = []
    for destination, target, tensor in split_original_state_dict(iter_original_tensors(list_weight_files(source))):
        if destination == "frame_scorer":
            scorer_tensors[target] = tensor
        else:
            expected = tensor.to(converted[target].dtype) if tensor.is_floating_point() else tensor
            model_tensors[target] = expected
            if not torch.equal(converted[target], expected):
                mismatched.append(target)
    report.add(
        "weights equal the source",
        f"{len(model_tensors) - len(mismatched)}/{len(model_tensors)} tensors identical",
        not mismatched and len(model_tensors) == len(converted),
    )
    return model_tensors, scorer_tensors


def _check_frame_scorer(source: Path, scorer_tensors: dict, processor, report: VerificationReport) -> None:
    scorer = processor.frame_scorer
    try:
        check_frame_scorer_tensors(read_original_config(source), scorer_tensors)
    except (KeyError, ValueError) as error:
        raise VerificationError(error.args[0]) from None
    clip = CLIPModel(transformers_clip_config(scorer.config)).eval()
    # Checked above: every weight is there; only position-id buffers may differ between transformers versions.
    clip.load_state_dict({key: tensor.float() for key, tensor in scorer_tensors.items()}, strict=False)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(4, 3, scorer.image_size, scorer.image_size, generator=generator)
    tokens = scorer.tokenizer(["what happens after the door opens?", "a red car"])
    with torch.no_grad():
        image_difference = _max_difference(
            scorer.embed_pixels(pixels), clip.get_image_features(pixel_values=pixels).pooler_output
        )
        text_difference = _max_difference(
            scorer.model.encode_text(tokens), clip.get_text_features(input_ids=tokens).pooler_output
        )
    report.add(
        "frame scorer (open_clip) = source CLIPModel",
        f"image {image_difference:.1e}, text {text_difference:.1e} max abs",
        max(image_difference, text_difference) <= FIXTURE_TOLERANCE,
    )


def _random_video_inputs(model: VilampForConditionalGeneration, num_frames: int) -> dict:
    config = model.config
    generator = torch.Generator().manual_seed(0)
    size = config.vision_config.image_size
    frames = torch.randint(0, 256, (num_frames, 3, size, size), dtype=torch.uint8, generator=generator)
    keyframe_mask = torch.zeros(num_frames, dtype=torch.bool)
    keyframe_mask[[0, num_frames // 2]] = True
    num_tokens = num_visual_tokens(num_frames, 2, model.model.tokens_per_keyframe)
    text_ids = torch.randint(0, config.video_token_id, (8,), generator=generator)
    input_ids = torch.cat([text_ids[:4], torch.full((num_tokens,), config.video_token_id), text_ids[4:]])[None]
    return {
        "input_ids": input_ids,
        "pixel_values_videos": frames,
        "keyframe_mask": keyframe_mask,
        "query_embeds": torch.randn(1, config.query_embed_dim, generator=generator),
    }


def _check_random_input(model, model_tensors: dict, report: VerificationReport) -> None:
    local_config = VilampConfig(**model.config.to_dict())
    # `_from_config` keeps the rotary buffers in float32 as `from_pretrained` does; `.to(dtype)` would not.
    reference = VilampForConditionalGeneration._from_config(local_config, dtype=model.dtype).eval()
    reference.load_state_dict(model_tensors, strict=True)
    inputs = _random_video_inputs(reference, num_frames=6)
    with torch.no_grad():
        difference = _max_difference(model(**inputs).logits, reference(**inputs).logits)
    report.add("random video: reloaded = source-built model", f"logits max abs {difference:.1e}", difference == 0.0)


def _check_fixture_outputs(source: Path, model, processor, report: VerificationReport) -> None:
    inputs = load_file(source / "inputs.safetensors")
    outputs = load_file(source / "outputs.safetensors")
    case = json.loads((source / "case.json").read_text())
    scorer = processor.frame_scorer
    with torch.no_grad():
        image_embeds = scorer.embed_pixels(inputs["clip_pixel_values"])
        text_embeds = scorer.embed_queries([case["query"]])
    clip_difference = max(
        _max_difference(image_embeds, outputs["clip_image_embeds"]),
        _max_difference(text_embeds, outputs["clip_text_embeds"]),
    )
    report.add("fixture: CLIP embeddings", f"max abs {clip_difference:.1e}", clip_difference <= FIXTURE_TOLERANCE)
    keyframe_mask = select_keyframes(
        image_embeds,
        text_embeds,
        processor.num_keyframes,
        processor.keyframe_similarity_threshold,
        processor.keyframe_relevance_threshold,
        fill_remaining=processor.fill_keyframe_gaps,
    )
    same_keyframes = torch.equal(keyframe_mask, outputs["keyframe_mask"].bool())
    report.add(
        "fixture: keyframes", f"{int(keyframe_mask.sum())} selected, mask identical: {same_keyframes}", same_keyframes
    )
    if model.dtype != torch.float32:
        report.add("fixture: logits and tokens", f"not compared: stored as {model.dtype}, recorded in float32", True)
        return
    num_tokens = num_visual_tokens(keyframe_mask.shape[0], int(keyframe_mask.sum()), model.model.tokens_per_keyframe)
    model_inputs = {
        "input_ids": expand_image_index(inputs["input_ids_with_image_index"], num_tokens, model.config.video_token_id),
        "pixel_values_videos": inputs["siglip_pixel_values"],
        "keyframe_mask": keyframe_mask,
        "query_embeds": outputs["clip_text_embeds"],
    }
    with torch.no_grad():
        logits_difference = _max_difference(model(**model_inputs).logits, outputs["logits"])
        generated = model.generate(**model_inputs, max_new_tokens=outputs["generated_ids"].shape[1], do_sample=False)
    new_tokens = generated[:, model_inputs["input_ids"].shape[1] :]
    report.add("fixture: logits", f"max abs {logits_difference:.1e}", logits_difference <= FIXTURE_TOLERANCE)
    same_tokens = new_tokens.tolist() == outputs["generated_ids"].tolist()
    report.add("fixture: greedy tokens", f"{new_tokens[0].tolist()} identical: {same_tokens}", same_tokens)


def verify_conversion(source: Path, output: Path) -> VerificationReport:
    """Runs the checks above; raises `VerificationError` with the report when one fails."""
    model = AutoModelForImageTextToText.from_pretrained(output, trust_remote_code=True, dtype="auto").eval()
    processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    report = VerificationReport()
    model_tensors, scorer_tensors = _check_weights(source, model, report)
    _check_frame_scorer(source, scorer_tensors, processor, report)
    _check_random_input(model, model_tensors, report)
    if (source / "inputs.safetensors").is_file() and (source / "outputs.safetensors").is_file():
        _check_fixture_outputs(source, model, processor, report)
    if not report.passed:
        raise VerificationError("Verification failed:\n" + "\n".join(report.lines()))
    return report
