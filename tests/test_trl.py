"""
TRL's `SFTTrainer` fine-tunes ViLAMP on a `datasets.Dataset` of chat messages with videos, as docs/training.md says:
the rows reach this project's dataset and collator through a collator of rows, with TRL's own preparation skipped.
"""

import datasets
import torch
from trl import SFTConfig, SFTTrainer

from vilamp.tiny import BUNDLED_CLIP, tiny_model_and_processor
from vilamp.training import (
    IGNORE_INDEX,
    PartLearningRatesMixin,
    VilampDataCollator,
    VilampTrainingDataset,
    set_trainable_parts,
)


class VideoChatCollator:
    """A batch of model inputs and labels from rows of chat `messages` (docs/training.md's collator)."""

    def __init__(self, processor, **dataset_options):
        self.processor = processor
        self.dataset_options = dataset_options
        self.batch = VilampDataCollator(processor.tokenizer)

    def __call__(self, rows):
        examples = VilampTrainingDataset(rows, self.processor, **self.dataset_options)
        return self.batch([examples[index] for index in range(len(rows))])


class RecordingSFTTrainer(PartLearningRatesMixin, SFTTrainer):
    """SFTTrainer with a learning rate per part, keeping the inputs and labels of every step it computes a loss on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.seen.append((inputs["input_ids"].clone(), inputs["labels"].clone()))
        return super().compute_loss(model, inputs, *args, **kwargs)


def test_sft_trainer_learns_the_answers_of_a_video_chat_dataset(tmp_path):
    model, processor = tiny_model_and_processor()
    set_trainable_parts(model, ["language_model", "projector"])
    table = datasets.Dataset.from_list(
        [
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "video", "video": str(BUNDLED_CLIP)},
                            {"type": "text", "text": "What does the rabbit do?"},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "It wakes up and stretches."}]},
                ]
            }
        ]
    )
    config = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=10,
        per_device_train_batch_size=1,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,  # SFTConfig turns bf16 on by default, CPU included
        remove_unused_columns=False,  # the rows' messages are what the collator reads
        dataset_kwargs={"skip_prepare_dataset": True},  # the collator tokenises; TRL's preparation would not expand
    )
    trainer = RecordingSFTTrainer(
        model=model,
        args=config,
        train_dataset=table,
        data_collator=VideoChatCollator(processor, label_masking="assistant", processor_kwargs={"max_frames": 2}),
        processing_class=processor,
        part_learning_rates={"projector": 3e-3},
    )
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 10 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0], losses
    assert len(trainer.seen) == 10
    for input_ids, labels in trainer.seen:  # one example a batch
        targets = (labels[0] != IGNORE_INDEX).nonzero()[:, 0]
        assert targets.tolist() == list(range(targets[0], targets[-1] + 1))  # one run of targets: the answer
        assert torch.equal(labels[0, targets], input_ids[0, targets])
        assert processor.tokenizer.decode(input_ids[0, targets]) == "It wakes up and stretches.<|im_end|>"
    rates = {(group["part"], group["lr"]) for group in trainer.optimizer.param_groups}
    assert rates == {("language_model", 1e-3), ("projector", 3e-3)}
