"""
`vilamp train` and what trains: the command on the embedded default and the bundled clip (checkpoints, the released
schedule, resuming after a crash to the losses of an uninterrupted run, the result loading back), the parameters of
each part, the learning rate of each optimizer group, and mistakes.
"""

import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging

from vilamp import cli
from vilamp.processing import VilampProcessor
from vilamp.tiny import BUNDLED_CLIP, tiny_model_and_processor
from vilamp.training import (
    RELEASED_PARTS,
    TrainingRecipe,
    VilampTrainer,
    parameter_groups,
    parameter_parts,
    resolve_parts,
    set_trainable_parts,
)


def conversation(question: str, answer: str) -> dict:
    """A record in the original's format about the bundled clip."""
    return {
        "video": BUNDLED_CLIP.name,
        "query": question,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
    }


@pytest.fixture(scope="module", autouse=True)
def library_progress_bars_restored():
    """`--quiet` turns transformers' progress bars off for the whole process: on again for the next tests."""
    enabled = logging.is_progress_bar_enabled()
    yield
    if enabled:
        logging.enable_progress_bar()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.json"
    records = [conversation("What does the rabbit do?", "It wakes up."), conversation("Is it day?", "Yes.")]
    path.write_text(json.dumps(records))
    return path


def train_command(data_file, output, *options: str) -> list[str]:
    # Two frames of the clip keep the steps short; gradient accumulation stays the recipe's 4 (2 examples a step).
    return [
        "train",
        *("--data", str(data_file), "--video-folder", str(BUNDLED_CLIP.parent), "--output", str(output)),
        *("--max-steps", "4", "--save-steps", "2", "--max-frames", "2", "--quiet", *options),
    ]


def logged(output, key: str) -> dict[int, float]:
    """`key` (loss, learning_rate) of every logged step of the run saved in `output`."""
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry[key] for entry in history if "loss" in entry}


def checkpoints(output) -> list[str]:
    return sorted(path.name for path in output.glob("checkpoint-*"))


@pytest.fixture(scope="module")
def uninterrupted(data_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert cli.main(train_command(data_file, output)) == 0
    return output


def test_run_follows_the_recipe_and_saves_a_model_that_loads_back(uninterrupted):
    assert checkpoints(uninterrupted) == ["checkpoint-4"]  # checkpoint-2 made way for it, as save_total_limit 1 says
    assert json.loads((uninterrupted / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    # Warmup over ceil(3% of 4) = 1 step from 0, then cosine from 1e-5 down.
    assert logged(uninterrupted, "learning_rate") == pytest.approx({1: 0.0, 2: 1e-5, 3: 7.5e-6, 4: 2.5e-6})
    assert all(torch.isfinite(torch.tensor(list(logged(uninterrupted, "loss").values()))))

    model = AutoModelForImageTextToText.from_pretrained(uninterrupted)
    assert isinstance(AutoProcessor.from_pretrained(uninterrupted), VilampProcessor)
    initial, _ = tiny_model_and_processor()
    changed = {name for name, value in model.named_parameters() if not torch.equal(value, initial.get_parameter(name))}
    parts = parameter_parts(initial)
    assert {parts[name] for name in changed} == {"language_model", "projector"}
    assert {name for name in parts if parts[name] == "projector"} <= changed


def test_a_finished_run_answers_through_vilamp_ask(uninterrupted, capfd):
    code = cli.main(["ask", str(BUNDLED_CLIP), "What does the rabbit do?", "--model", str(uninterrupted), "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    record = json.loads(out)
    assert record["model"] == str(uninterrupted) and len(record["keyframes"]) == 2
    assert isinstance(record["answer"], str)


def test_resuming_after_a_crash_gives_the_uninterrupted_losses(uninterrupted, data_file, tmp_path, monkeypatch, capfd):
    output = tmp_path / "crashed"
    step = VilampTrainer.training_step

    def crash_in_step_3(trainer, *args, **kwargs):
        if trainer.state.global_step == 2:
            raise KeyboardInterrupt
        return step(trainer, *args, **kwargs)

    monkeypatch.setattr(VilampTrainer, "training_step", crash_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        cli.main(train_command(data_file, output))
    monkeypatch.undo()
    assert checkpoints(output) == ["checkpoint-2"] and not (output / "model.safetensors").exists()

    assert cli.main(train_command(data_file, output)) == 2  # a new run would mix with the crashed one's checkpoints
    assert "already holds checkpoints (checkpoint-2): resume from the last one (--resume)" in capfd.readouterr().err
    logging.warning_once.cache_clear()  # transformers warns once per process: let any warning of this run show
    assert cli.main(train_command(data_file, output, "--resume")) == 0
    # --quiet: not even transformers' notice that gradient checkpointing turns the key/value cache off.
    assert capfd.readouterr().err == ""
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
    assert logged(output, "loss") == pytest.approx(logged(uninterrupted, "loss"), rel=1e-6, abs=0)
    assert json.loads((output / "config.json").read_text())["text_config"]["use_cache"] is True

    assert cli.main(train_command(data_file, output, "--resume")) == 2  # a finished run is not trained again
    assert capfd.readouterr().err == (
        f"vilamp: error: Nothing to resume: the run in {output} already finished (checkpoint-4, 4 of 4 steps); "
        "give more --max-steps or --epochs to train on.\n"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--data", "missing.json"], "no such data file: missing.json"),
        (["--video-folder", "no-such-folder"], "--video-folder no-such-folder: no such directory"),
        (["--parts", "language_model,vision"], "Unknown part 'vision': choose among language_model, projector"),
        (["--parts", "frame_selector"], "The recipe does not train the frame scorer"),
        (["--label-masking", "all"], "Unknown label_masking 'all': choose one of released, assistant"),
        (["--resume"], "Nothing to resume: out holds no checkpoint-N folder"),
        pytest.param(
            ["--bf16"],
            "bf16=True (--bf16) needs a CUDA GPU that supports bfloat16",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU may support bfloat16"),
        ),
    ],
)
def test_mistakes_are_one_line_before_any_loading(data_file, tmp_path, monkeypatch, capfd, options, message):
    def load(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "load_model_and_processor", load)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.json").write_text(data_file.read_text())
    command = ["train", "--data", "data.json", "--output", "out", *options]
    assert cli.main(command) == 2
    out, err = capfd.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith(f"vilamp: error: {message}"), err


@pytest.fixture
def model():
    return tiny_model_and_processor()[0]


def trainable(model: nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


MERGER = ("patch_query_proj", "patch_context_proj", "query_proj", "context_proj")
EXPECTED = {
    "projector": {f"model.multi_modal_projector.linear_{n}.{kind}" for n in (1, 2) for kind in ("weight", "bias")},
    "feature_merger": {
        "model.feature_merger.temperature",
        *(f"model.feature_merger.{linear}.{kind}" for linear in MERGER for kind in ("weight", "bias")),
    },
}


@pytest.mark.parametrize("part", ["language_model", "projector", "vision_tower", "feature_merger"])
def test_each_part_trains_its_parameters_only(model, part):
    names = {name for name, _ in model.named_parameters()}
    expected = {
        "language_model": {name for name in names if name.startswith("model.language_model.")}
        | {"lm_head.weight", "model.image_newline"},
        "vision_tower": {name for name in names if name.startswith("model.vision_tower.")},
        **EXPECTED,
    }[part]
    sizes = set_trainable_parts(model, [part])
    assert trainable(model) == expected
    assert sizes == {part: sum(model.get_parameter(name).numel() for name in expected)}


def test_original_names_choose_the_same_parts(model):
    set_trainable_parts(model, "mm_language_model,mm_mlp_adapter")
    released = trainable(model)
    set_trainable_parts(model, RELEASED_PARTS)
    assert trainable(model) == released
    assert resolve_parts(["composer_projector", " mm_vision_tower", "projector", "projector"]) == (
        "projector",
        "vision_tower",
        "feature_merger",
    )


class WithFrameScorer(nn.Module):
    """Stands for `VilampWithFrameScorer`: the model as `.model`, the CLIP scorer as `.frame_scorer`."""

    def __init__(self, model, frame_scorer):
        super().__init__()
        self.model, self.frame_scorer = model, frame_scorer


def test_frame_scorer_trains_through_a_wrapper_only(model):
    with pytest.raises(ValueError, match=r"Part 'frame_scorer' is not in VilampForConditionalGeneration .*wrap both"):
        set_trainable_parts(model, ["projector", "frame_selector"])
    scorer = tiny_model_and_processor()[1].frame_scorer.model
    wrapper = WithFrameScorer(model, scorer)
    set_trainable_parts(wrapper, ["frame_scorer", "feature_merger"])
    scorer_names = {f"frame_scorer.{name}" for name, _ in scorer.named_parameters()}
    assert trainable(wrapper) == scorer_names | {f"model.{name}" for name in EXPECTED["feature_merger"]}
    assert {parameter_parts(wrapper)[name] for name in scorer_names} == {"frame_scorer"}


def test_unknown_parts_are_errors_listing_the_valid_ones(model):
    valid = "choose among language_model, projector, vision_tower, feature_merger, frame_scorer (or the original's"
    with pytest.raises(ValueError, match=rf"^Unknown part 'mlp': {valid.replace('(', '[(]')}"):
        set_trainable_parts(model, ["language_model", "mlp"])
    with pytest.raises(ValueError, match="No part to train was given"):
        resolve_parts(" , ")
    set_trainable_parts(model, ["projector"])
    with pytest.raises(ValueError, match="Unknown part 'tower'"):
        parameter_groups(model, 1e-5, {"tower": 2e-6})
    with pytest.raises(ValueError, match="learning rate of part 'projector' must be a number of at least 0, got -1"):
        parameter_groups(model, 1e-5, {"projector": -1})
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="No parameter of the model requires gradients"):
        parameter_groups(model, 1e-5)


def group_summary(groups) -> dict[tuple[str, float], tuple[float, set[int]]]:
    """`{(part, weight decay): (learning rate, ids of the parameters)}` of optimizer parameter groups."""
    return {(g["part"], g["weight_decay"]): (g["lr"], {id(p) for p in g["params"]}) for g in groups}


def part_ids(model, part: str, kind: str = "") -> set[int]:
    parts = parameter_parts(model)
    return {id(p) for name, p in model.named_parameters() if parts[name] == part and name.endswith(kind)}


def test_parameter_groups_give_each_part_its_learning_rate(model):
    set_trainable_parts(model, ["language_model", "projector", "vision_tower"])
    groups = parameter_groups(model, 1e-5, {"mm_vision_tower": 2e-6, "feature_merger": 1.0})
    assert group_summary(groups) == {
        ("language_model", 0.0): (1e-5, part_ids(model, "language_model")),
        ("projector", 0.0): (1e-5, part_ids(model, "projector")),
        ("vision_tower", 0.0): (2e-6, part_ids(model, "vision_tower")),
    }
    set_trainable_parts(model, ["projector"])
    decayed = [name for name, _ in model.named_parameters() if not name.endswith("bias")]
    assert group_summary(parameter_groups(model, 1e-4, weight_decay=0.1, decay_parameter_names=decayed)) == {
        ("projector", 0.1): (1e-4, part_ids(model, "projector", "weight")),
        ("projector", 0.0): (1e-4, part_ids(model, "projector", "bias")),
    }


def test_recipe_trainer_builds_adamw_with_the_released_rates(model, tmp_path):
    arguments = TrainingRecipe(tmp_path / "data.json", tmp_path / "out").training_arguments()
    released = {
        "learning_rate": 1e-5,
        "weight_decay": 0.0,
        "optim": "adamw_torch",
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 4,
        "num_train_epochs": 1.0,
        "activation_checkpointing": True,
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    }
    assert {name: getattr(arguments, name) for name in released} == released
    set_trainable_parts(model, ["language_model", "vision_tower"])
    trainer = VilampTrainer(model=model, args=arguments, part_learning_rates={"vision_tower": 2e-6})
    optimizer = trainer.create_optimizer()
    assert type(optimizer) is torch.optim.AdamW
    rates = [(group["part"], group["lr"], group["weight_decay"]) for group in optimizer.param_groups]
    assert sorted(rates) == [("language_model", 1e-5, 0.0), ("vision_tower", 2e-6, 0.0)]  # no decay: a group a part
