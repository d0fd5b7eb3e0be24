"""
What trains in a fine-tune: ViLAMP's parts by name, the parameters each part holds, and optimizer parameter groups
with a learning rate per part.

| part             | parameters                                                      | the original's name   |
| ---------------- | --------------------------------------------------------------- | --------------------- |
| `language_model` | `model.language_model.*` (embeddings included), `lm_head`,       | `mm_language_model`   |
|                  | `model.image_newline`                                           |                       |
| `projector`      | `model.multi_modal_projector.*`                                 | `mm_mlp_adapter`      |
| `vision_tower`   | `model.vision_tower.*` (SigLIP)                                 | `mm_vision_tower`     |
| `feature_merger` | `model.feature_merger.*` (differential feature merging)         | `composer_projector`  |
| `frame_scorer`   | the CLIP frame scorer, held by a wrapper next to the model      | `frame_selector`      |

The original's names are its `--mm_tunable_parts` values (`llava/train/train.py`), accepted here as synonyms.
`image_newline` trains with the language model because the original's `mm_language_model` unfreezes every parameter
outside the named multimodal modules, and its `mm_mlp_adapter` only the projector's. The released fine-tune trains
`language_model` and `projector` (`RELEASED_PARTS`).

The frame scorer is no part of `VilampForConditionalGeneration`: it lives in the processor, which scores frames in
the DataLoader. To train it, wrap model and scorer in one module holding them as `.model` and `.frame_scorer`
(`vilamp.training.scorer.VilampWithFrameScorer`); every function here takes either.

    set_trainable_parts(model, ["language_model", "projector"])
    trainer = VilampTrainer(model, args, part_learning_rates={"vision_tower": 2e-6}, ...)
"""

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer

from ..modeling_vilamp import VilampForConditionalGeneration, VilampModel


# Parameter name prefixes of each part, relative to `VilampForConditionalGeneration`.
MODEL_PARTS: dict[str, tuple[str, ...]] = {
    "language_model": ("model.language_model", "lm_head", "model.image_newline"),
    "projector": ("model.multi_modal_projector",),
    "vision_tower": ("model.vision_tower",),
    "feature_merger": ("model.feature_merger",),
}
FRAME_SCORER = "frame_scorer"
PARTS = (*MODEL_PARTS, FRAME_SCORER)
ORIGINAL_PART_NAMES = {
    "mm_language_model": "language_model",
    "mm_mlp_adapter": "projector",
    "mm_vision_tower": "vision_tower",
    "composer_projector": "feature_merger",
    "frame_selector": FRAME_SCORER,
}
RELEASED_PARTS = ("language_model", "projector")  # scripts/train/finetune_*.sh: "mm_language_model,mm_mlp_adapter"


def resolve_parts(parts: str | Iterable[str]) -> tuple[str, ...]:
    """
    The part names that `parts` gives, in `PARTS` order without repeats: this project's names or the original's
    (`ORIGINAL_PART_NAMES`), as an iterable or one comma-separated string (`"mm_language_model,mm_mlp_adapter"`).
    Raises `ValueError` naming an unknown part, or when none is given.
    """
    names = parts.split(",") if isinstance(parts, str) else list(parts)
    chosen = {resolve_part(name.strip()) for name in names if name.strip()}
    if not chosen:
        raise ValueError(f"No part to train was given: choose among {', '.join(PARTS)}.")
    return tuple(part for part in PARTS if part in chosen)


def resolve_part(name: str) -> str:
    """This project's name for part `name` (given by either name); `ValueError` listing the valid ones if unknown."""
    if name in PARTS:
        return name
    if name in ORIGINAL_PART_NAMES:
        return ORIGINAL_PART_NAMES[name]
    raise ValueError(
        f"Unknown part {name!r}: choose among {', '.join(PARTS)} (or the original's {', '.join(ORIGINAL_PART_NAMES)})."
    )


def split_model(model: nn.Module) -> tuple[VilampForConditionalGeneration, nn.Module | None]:
    """
    The `VilampForConditionalGeneration` inside `model` (itself, or its `.model`, as in a frame-scorer wrapper or a
    PEFT model) and the frame scorer that a wrapper holds as `.frame_scorer` (`None` without one).
    """
    if isinstance(model, VilampForConditionalGeneration):
        return model, None
    inner = getattr(model, "model", None)
    if not isinstance(inner, VilampForConditionalGeneration):
        raise TypeError(
            f"Expected a VilampForConditionalGeneration or a module holding one as `.model`, got "
            f"{type(model).__name__}."
        )
    return inner, getattr(model, FRAME_SCORER, None)


def model_part(name: str) -> str:
    """The part that holds parameter `name` of a `VilampForConditionalGeneration`."""
    for part, prefixes in MODEL_PARTS.items():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return part
    raise ValueError(f"Parameter {name} of the model belongs to none of the parts {', '.join(MODEL_PARTS)}.")


def parameter_parts(model: nn.Module) -> dict[str, str]:
    """
    `{name: part}` for every parameter of `model` (a `VilampForConditionalGeneration` or a wrapper holding it as
    `.model` and the frame scorer as `.frame_scorer`), named as `model.named_parameters()` names them.
    """
    vilamp, frame_scorer = split_model(model)
    # By identity: the names differ between the model and a wrapper around it.
    part_of = {id(parameter): model_part(name) for name, parameter in vilamp.named_parameters()}
    if frame_scorer is not None:
        part_of.update((id(parameter), FRAME_SCORER) for parameter in frame_scorer.parameters())
    parts = {}
    for name, parameter in model.named_parameters():
        if id(parameter) not in part_of:
            raise ValueError(f"Parameter {name} belongs neither to the ViLAMP model nor to its frame scorer.")
        parts[name] = part_of[id(parameter)]
    return parts


def set_trainable_parts(model: nn.Module, parts: str | Iterable[str] = RELEASED_PARTS) -> dict[str, int]:
    """
    Makes the parameters of `parts` (see `resolve_parts`) require gradients and freezes every other parameter of
    `model`. `model` is a `VilampForConditionalGeneration`, or a wrapper holding it as `.model` and the frame scorer
    as `.frame_scorer`, which `"frame_scorer"` needs. Returns the number of trainable values per chosen part.

    With PEFT, leave the choice to its config (`target_modules`, `modules_to_save`) instead: this would also freeze
    or unfreeze the adapters, which sit inside the parts.
    """
    chosen = resolve_parts(parts)
    if FRAME_SCORER in chosen and split_model(model)[1] is None:
        raise ValueError(
            "Part 'frame_scorer' is not in VilampForConditionalGeneration (the frame scorer lives in the processor): "
            "wrap both as vilamp.training.scorer.VilampWithFrameScorer(model, processor.frame_scorer.model) and "
            "pass the wrapper."
        )
    parts, sizes = parameter_parts(model), dict.fromkeys(chosen, 0)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(parts[name] in sizes)
        if parts[name] in sizes:
            sizes[parts[name]] += parameter.numel()
    return sizes


def check_part_learning_rates(part_learning_rates: Mapping[str, float] | None) -> dict[str, float]:
    """
    `part_learning_rates` keyed by this project's part names (either name is accepted); `ValueError` for an unknown
    part or a rate that is not a number of at least 0.
    """
    rates = {}
    for name, rate in (part_learning_rates or {}).items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate >= 0:
            raise ValueError(f"The learning rate of part {name!r} must be a number of at least 0, got {rate!r}.")
        rates[resolve_part(name)] = float(rate)
    return rates


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    part_learning_rates: Mapping[str, float] | None = None,
    weight_decay: float = 0.0,
    decay_parameter_names: Iterable[str] | None = None,
) -> list[dict]:
    """
    Optimizer parameter groups for the parameters of `model` that require gradients: one group per part, at
    `part_learning_rates[part]` or else `learning_rate`, marked with its part's name under `"part"`. With a
    `weight_decay`, a part's parameters named in `decay_parameter_names` (all of them when `None`) form a group with
    that decay and the others one without (Trainer leaves biases and norms undecayed this way).

    Raises `ValueError` when no parameter requires gradients, or for an unknown part in `part_learning_rates`.
    """
    rates = check_part_learning_rates(part_learning_rates)
    decayed = None if decay_parameter_names is None else set(decay_parameter_names)
    parts = parameter_parts(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = parts[name]
        decays = weight_decay > 0 and (decayed is None or name in decayed)
        group = groups.setdefault(
            (part, decays),
            {
                "params": [],
                "lr": rates.get(part, learning_rate),
                "weight_decay": weight_decay if decays else 0.0,
                "part": part,
            },
        )
        group["params"].append(parameter)
    if not groups:
        raise ValueError("No parameter of the model requires gradients: choose what trains with set_trainable_parts.")
    return list(groups.values())


class PartLearningRatesMixin:
    """
    Gives a `transformers.Trainer` (or a subclass, such as TRL's `SFTTrainer`) a learning rate per part: the
    optimizer that `args.optim` names gets `parameter_groups(...)`, at `part_learning_rates` for the parts listed and
    `args.learning_rate` for the others, with `args.weight_decay` where Trainer would apply it. Without
    `part_learning_rates` the trainer builds its optimizer as usual.

        class VilampSFTTrainer(PartLearningRatesMixin, SFTTrainer):
            pass

        trainer = VilampSFTTrainer(model, args, part_learning_rates={"vision_tower": 2e-6}, ...)

    The groups are built when the optimizer is, from the model the trainer then holds, so after DeepSpeed or FSDP2
    preparation as well.
    """

    def __init__(self, *args, part_learning_rates: Mapping[str, float] | None = None, **kwargs):
        self.part_learning_rates = check_part_learning_rates(part_learning_rates)
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The trainer's optimizer, over one parameter group per part when `part_learning_rates` are given."""
        if not self.part_learning_rates or self.optimizer is not None:
            return super().create_optimizer(model)
        trained = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(
            self.args, trained
        )
        # Optimizers that Trainer builds from the model itself (GaLore, LOMO, Muon factories...) take no groups.
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)) or any(
            key in optimizer_kwargs for key in ("params", "model", "optimizer_dict")
        ):
            raise ValueError(
                f"optim {self.args.optim!r} builds its own parameter groups: per-part learning rates need an "
                "optimizer that takes them, such as adamw_torch."
            )
        groups = parameter_groups(
            trained,
            self.args.learning_rate,
            self.part_learning_rates,
            self.args.weight_decay,
            self.get_decay_parameter_names(trained),
        )
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def lockstep_vision_chunks(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> int:
    """
    The most vision tower runs that any rank's `inputs` need (`VilampModel.vision_chunk_sizes`, all-reduced). With
    the weights sharded across ranks, every run gathers them in collectives, which must pair up between ranks.
    """
    vilamp = next(module for module in model.modules() if isinstance(module, VilampModel))
    chunks = vilamp.vision_chunk_sizes(inputs["keyframe_mask"], inputs.get("video_frame_counts"))
    count = torch.tensor([len(chunks)], device=vilamp.image_newline.device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count)


class LockstepVisionChunksMixin:
    """
    Makes a `transformers.Trainer` (or TRL's `SFTTrainer`) run the vision tower equally often on every rank when the
    weights are sharded (FSDP, DeepSpeed): ranks whose videos need fewer chunks run idle ones (`num_vision_chunks`).
    Without it, ranks with videos of different lengths stop at mismatched collectives.
    """

    def compute_loss(self, model: nn.Module, inputs: dict, *args, **kwargs):
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        if sharded and self.args.world_size > 1 and "pixel_values_videos" in inputs:
            inputs = {**inputs, "num_vision_chunks": lockstep_vision_chunks(model, inputs)}
        return super().compute_loss(model, inputs, *args, **kwargs)


class VilampTrainer(PartLearningRatesMixin, LockstepVisionChunksMixin, Trainer):
    """
    `transformers.Trainer` with a learning rate per part (`part_learning_rates`, see `PartLearningRatesMixin`) and
    sharded training's vision lockstep (`LockstepVisionChunksMixin`).
    """
