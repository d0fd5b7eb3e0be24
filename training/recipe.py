"""
The released fine-tuning recipe (docs/architecture.md, "Training recipe": `llava/train/train.py`,
`scripts/train/finetune_*.sh`, the paper) as `transformers.Trainer` settings, and the run behind `vilamp train`:

    recipe = TrainingRecipe(data="data.yaml", output_dir="runs/vilamp-ft", video_folder="videos")
    trainer = train(model, processor, recipe)

Checkpoints go to `output_dir/checkpoint-N` every `save_steps` steps; at the end the model and processor are saved
in `output_dir` itself, where `AutoModelForImageTextToText` and `AutoProcessor` load them. Progress bars and the
loss logs are Trainer's.
"""

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PrinterCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint

from ..modeling_vilamp import VilampForConditionalGeneration
from ..processing import VilampProcessor
from .data import VilampDataCollator, VilampTrainingDataset
from .labels import check_label_masking
from .trainable import FRAME_SCORER, RELEASED_PARTS, VilampTrainer, resolve_parts, set_trainable_parts


@dataclass
class TrainingRecipe:
    """
    One fine-tuning run. The defaults are the released recipe: the language model and projector train at 1e-5 with
    AdamW and no weight decay, a cosine schedule after a warmup over 3% of the steps, bf16, activation
    checkpointing, one example per device with gradient accumulation 4, one epoch, the released label masking and
    every frame that sampling at one frame per second gives (no cap).

    Attributes:
        data: a JSON list, JSON Lines or YAML mixture file of examples (see `vilamp.training.examples`).
        output_dir: where checkpoints and the final model and processor go.
        video_folder: the folder the examples' video paths are relative to.
        parts: what trains (see `vilamp.training.trainable`): part names (either kind), or one comma-separated string;
            not the frame scorer.
        learning_rate: the learning rate of every part but the vision tower.
        vision_tower_learning_rate: the vision tower's (the original's `mm_vision_tower_lr`), when it trains.
        epochs: passes over the data; `max_steps` overrides it when set.
        max_steps: optimizer steps to run, when set.
        batch_size: examples per device and step.
        gradient_accumulation: micro-batches summed into each optimizer step.
        warmup_ratio: the share of the steps over which the learning rate rises linearly from 0.
        lr_scheduler: the schedule after warmup (a `transformers` scheduler type).
        weight_decay: AdamW's decoupled weight decay (not on biases and norms).
        bf16: bfloat16 mixed precision; `None` turns it on where a CUDA GPU supports it.
        gradient_checkpointing: recompute activations in the backward pass instead of keeping them.
        label_masking: `"released"` or `"assistant"` (see `vilamp.training.labels`).
        max_frames: a cap on the frames sampled from a video; `None` for none, as in the released recipe.
        skip_broken: skip unreadable examples with a warning (the original skips them silently) instead of stopping.
        resume: continue from the last checkpoint in `output_dir`.
        save_steps: steps between checkpoints.
        save_total_limit: the checkpoints kept (the oldest are deleted); `None` keeps all.
        num_workers: DataLoader worker processes, which decode and score the videos (0: the training process).
        seed: the seed of initialisation, data order and `random:N` mixture sampling.
        logging_steps: steps between loss logs.
    """

    data: str | os.PathLike
    output_dir: str | os.PathLike
    video_folder: str | os.PathLike | None = None
    parts: str | Sequence[str] = RELEASED_PARTS
    learning_rate: float = 1e-5
    vision_tower_learning_rate: float = 2e-6
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 1
    gradient_accumulation: int = 4
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    bf16: bool | None = None
    gradient_checkpointing: bool = True
    label_masking: str = "released"
    max_frames: int | None = None
    skip_broken: bool = False
    resume: bool = False
    save_steps: int = 1000
    save_total_limit: int | None = 1
    num_workers: int = 0
    seed: int = 42
    logging_steps: int = 1

    def __post_init__(self):
        self.parts = resolve_parts(self.parts)
        if FRAME_SCORER in self.parts:
            raise ValueError(
                "The recipe does not train the frame scorer: it scores frames in the DataLoader, without gradients. "
                "Train it with VilampWithFrameScorer (see docs/training.md)."
            )
        check_label_masking(self.label_masking)
        if self.bf16 and not cuda_supports_bf16():
            raise ValueError("bf16=True (--bf16) needs a CUDA GPU that supports bfloat16; there is none here.")

    def uses_bf16(self) -> bool:
        """Whether the run trains in bfloat16 mixed precision: `bf16`, or when unset, whether CUDA supports it."""
        return cuda_supports_bf16() if self.bf16 is None else self.bf16

    def training_arguments(self, show_progress: bool = True) -> TrainingArguments:
        """The `TrainingArguments` of this recipe (`show_progress=False`: no progress bar)."""
        return TrainingArguments(
            output_dir=str(self.output_dir),
            num_train_epochs=self.epochs,
            max_steps=-1 if self.max_steps is None else self.max_steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation,
            learning_rate=self.learning_rate,
            optim="adamw_torch",
            weight_decay=self.weight_decay,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_ratio,  # below 1: a share of the steps
            bf16=self.uses_bf16(),
            activation_checkpointing=self.gradient_checkpointing,
            # A batch whose frames are all keyframes merges none: DDP must then expect the merger without gradients.
            ddp_find_unused_parameters="feature_merger" in self.parts,
            logging_steps=self.logging_steps,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            dataloader_num_workers=self.num_workers,
            dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs a GPU, and warns without one
            seed=self.seed,
            report_to="none",
            disable_tqdm=not show_progress,
        )

    def dataset(self, processor: VilampProcessor) -> VilampTrainingDataset:
        """The examples of `data`, read through `processor` with this recipe's masking and frame cap."""
        return VilampTrainingDataset.from_file(
            self.data,
            processor,
            seed=self.seed,
            video_folder=self.video_folder,
            label_masking=self.label_masking,
            skip_broken=self.skip_broken,
            processor_kwargs={"max_frames": self.max_frames},
        )


def cuda_supports_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def check_output_directory(
    output_dir: str | os.PathLike, resume: bool, max_steps: int | None = None, epochs: float | None = None
) -> str | None:
    """
    The last checkpoint in `output_dir` to resume from (`None` when not resuming). Raises `ValueError` when resuming
    finds no checkpoint or a run that already made its `max_steps` (or, for as many `epochs` as it planned, its own
    plan), and when a new run would write over an earlier run's checkpoints.
    """
    last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if resume and last is None:
        raise ValueError(f"Nothing to resume: {output_dir} holds no checkpoint-N folder.")
    if resume:
        state = json.loads((Path(last) / TRAINER_STATE_NAME).read_text())
        # The steps this run plans: `max_steps` when given, else the checkpoint's own plan for as many epochs.
        planned = max_steps
        if planned is None and epochs == state.get("num_train_epochs"):
            planned = state.get("max_steps")
        if planned is not None and state["global_step"] >= planned:
            raise ValueError(
                f"Nothing to resume: the run in {output_dir} already finished ({Path(last).name}, "
                f"{state['global_step']} of {planned} steps); give more --max-steps or --epochs to train on."
            )
    if not resume and last is not None:
        raise ValueError(
            f"{output_dir} already holds checkpoints ({Path(last).name}): resume from the last one (--resume), or "
            "give another output directory."
        )
    return last


def train(
    model: VilampForConditionalGeneration,
    processor: VilampProcessor,
    recipe: TrainingRecipe,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> VilampTrainer:
    """
    Fine-tunes `model` (load it in float32: under bf16 the optimizer updates these weights, in mixed precision) as
    `recipe` says, then saves model, processor and trainer state in `recipe.output_dir`; returns the trainer. `log`
    receives the run's notes (what trains, the precision, where the result went); `show_progress=False` leaves out
    Trainer's progress bar and loss logs.
    """
    checkpoint = check_output_directory(recipe.output_dir, recipe.resume, recipe.max_steps, recipe.epochs)
    sizes = set_trainable_parts(model, recipe.parts)
    log("training: " + ", ".join(f"{part} ({size:,} parameters)" for part, size in sizes.items()))
    arguments = recipe.training_arguments(show_progress)
    if recipe.bf16 is None and not arguments.bf16:
        log("NOTE: no CUDA GPU with bfloat16 here: training in float32 instead of the recipe's bf16.")
    trainer = VilampTrainer(
        model=model,
        args=arguments,
        train_dataset=recipe.dataset(processor),
        data_collator=VilampDataCollator(processor.tokenizer),
        processing_class=processor,
        part_learning_rates={"vision_tower": recipe.vision_tower_learning_rate},
    )
    if not show_progress:
        trainer.remove_callback(PrinterCallback)  # prints the loss logs where no progress bar does
    if checkpoint is not None:
        log(f"resuming from {checkpoint}")
    # Training never reads the key/value cache; left on, transformers warns on every run with gradient checkpointing
    # that it turns it off. The saved config keeps the model's own setting.
    text_config = model.config.get_text_config()
    use_cache, text_config.use_cache = text_config.use_cache, False
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        text_config.use_cache = use_cache
    trainer.save_model()
    trainer.save_state()
    log(f"saved the model and processor in {recipe.output_dir}")
    return trainer
