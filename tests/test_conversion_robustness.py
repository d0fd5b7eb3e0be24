"""
The converter with damaged sources and awkward outputs: it either produces the whole repository or leaves the output
path as it was, and every refusal is one line naming the file or tensor at fault.
"""

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import vilamp.conversion.convert_vilamp_to_hf
import vilamp.conversion.verify_conversion
from conftest import FIXTURES
from test_conversion import copy_source, quiet
from vilamp.conversion.convert_vilamp_to_hf import ConversionError, convert_checkpoint, main
from vilamp.conversion.verify_conversion import VerificationError


SCORER_KEY = "model.frame_selector.model.visual_projection.weight"
USER_FILES = {"README.md": "my notes\n", "config.json": '{"mine": true}\n', "unrelated.txt": "keep out of the Hub\n"}


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "partial-fill" / "model.safetensors")


@pytest.fixture
def source(tmp_path, weights) -> Path:
    return copy_source(tmp_path, weights)


def write_user_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in USER_FILES.items():
        (directory / name).write_text(text)
    (directory / "runs").mkdir()
    (directory / "runs" / "log.txt").write_text("old run\n")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below `directory` with its bytes, so that "left as it was" can be compared exactly."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """The command line's exit code and stderr; verification runs only where a test asks for it."""
    code = main([*argv, "--no-verify"] if "--verify" not in argv else argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, error: str, *fragments: str) -> None:
    assert code == 2
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    for fragment in fragments:
        assert fragment in error, (fragment, error)


def assert_no_leftovers(parent: Path, *expected: str) -> None:
    assert sorted(path.name for path in parent.iterdir()) == sorted(expected)


# The output directory: all or nothing, and never the user's files.


def test_non_empty_output_is_refused_and_left_alone(tmp_path, source, capsys):
    output = tmp_path / "out"
    write_user_files(output)
    before = snapshot(output)
    code, error = run_main(["--checkpoint", str(source), "--output", str(output)], capsys)
    assert_one_line_error(code, error, str(output), "not empty", "--overwrite")
    assert snapshot(output) == before
    assert_no_leftovers(tmp_path, "source", "out")


def test_overwrite_replaces_the_whole_directory(tmp_path, source, capsys):
    output = tmp_path / "out"
    write_user_files(output)
    code, _ = run_main(["--checkpoint", str(source), "--output", str(output), "--overwrite"], capsys)
    assert code == 0
    names = {path.name for path in output.iterdir()}
    assert "unrelated.txt" not in names and "runs" not in names
    assert "model.safetensors" in names and "auto_map" in json.loads((output / "config.json").read_text())
    assert (output / "README.md").read_text().startswith("---\n")
    assert_no_leftovers(tmp_path, "source", "out")


def test_existing_empty_directory_is_used(tmp_path, source):
    output = tmp_path / "out"
    output.mkdir()
    convert_checkpoint(source, output, dtype="float32", log=quiet)
    assert (output / "model.safetensors").is_file()
    assert_no_leftovers(tmp_path, "source", "out")


def test_output_that_is_a_file_is_refused(tmp_path, source, capsys):
    output = tmp_path / "out"
    output.write_text("a file\n")
    for extra in ([], ["--overwrite"]):
        code, error = run_main(["--checkpoint", str(source), "--output", str(output), *extra], capsys)
        assert_one_line_error(code, error, f"--output {output} is a file")
    assert output.read_text() == "a file\n"


def test_empty_output_path_is_refused(tmp_path, source, capsys, monkeypatch):
    # An unset shell variable (`--output "$OUT" --overwrite`) must not mean the current directory.
    monkeypatch.chdir(tmp_path)
    code, error = run_main(["--checkpoint", str(source), "--output", "", "--overwrite"], capsys)
    assert_one_line_error(code, error, "--output is empty")
    assert_no_leftovers(tmp_path, "source")


def test_output_holding_the_checkpoint_is_refused(tmp_path, source):
    before = snapshot(source)
    with pytest.raises(ConversionError, match="must not be --checkpoint or a directory that holds it"):
        convert_checkpoint(source, tmp_path, overwrite=True, log=quiet)
    with pytest.raises(ConversionError, match="must not be --checkpoint"):
        convert_checkpoint(source, source, overwrite=True, log=quiet)
    assert snapshot(source) == before


def without_scorer_tensor(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A source that fails late: the model's shards are written before the frame scorer is found incomplete."""
    return {key: tensor for key, tensor in weights.items() if key != SCORER_KEY}


def test_failure_halfway_leaves_no_output_and_no_parents(tmp_path, weights):
    source = copy_source(tmp_path, without_scorer_tensor(weights))
    output = tmp_path / "new" / "nested" / "out"
    with pytest.raises(ConversionError, match=SCORER_KEY):
        convert_checkpoint(source, output, dtype="float32", log=quiet)
    assert_no_leftovers(tmp_path, "source")


def test_failure_halfway_with_overwrite_keeps_the_old_directory(tmp_path, weights):
    source = copy_source(tmp_path, without_scorer_tensor(weights))
    output = tmp_path / "out"
    write_user_files(output)
    before = snapshot(output)
    with pytest.raises(ConversionError, match=SCORER_KEY):
        convert_checkpoint(source, output, dtype="float32", overwrite=True, log=quiet)
    assert snapshot(output) == before
    assert_no_leftovers(tmp_path, "source", "out")


@pytest.mark.parametrize("existing", [False, True])
def test_failed_verification_moves_nothing_into_place(tmp_path, source, capsys, monkeypatch, existing):
    checked = []

    def failing_verification(source_dir, directory):
        checked.append(Path(directory))
        assert (Path(directory) / "model.safetensors").is_file()
        raise VerificationError("Verification failed: weights differ")

    monkeypatch.setattr(vilamp.conversion.verify_conversion, "verify_conversion", failing_verification)
    output = tmp_path / "out"
    if existing:
        write_user_files(output)
    before = snapshot(output) if existing else {}
    argv = ["--checkpoint", str(source), "--output", str(output), "--verify", "--overwrite"]
    code, error = run_main(argv, capsys)
    assert_one_line_error(code, error, "weights differ")
    assert [directory.parent.parent for directory in checked] == [tmp_path]  # the staging directory, not `output`
    assert output.exists() == existing and (snapshot(output) if existing else {}) == before
    assert_no_leftovers(tmp_path, "source", *(["out"] if existing else []))


def test_failed_swap_puts_the_old_directory_back(tmp_path, source, monkeypatch):
    output = tmp_path / "out"
    write_user_files(output)
    before = snapshot(output)
    rename = os.rename

    def rename_failing_into_output(src, dst):
        # Fails the new directory's move only; the old one's moves aside and back succeed.
        if Path(dst) == output and Path(src).name == "out":
            raise OSError(errno.EIO, "simulated failure", str(dst))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_failing_into_output)
    with pytest.raises(ConversionError, match="simulated failure"):
        convert_checkpoint(source, output, dtype="float32", overwrite=True, log=quiet)
    monkeypatch.undo()
    assert snapshot(output) == before
    assert_no_leftovers(tmp_path, "source", "out")


# Damaged inputs and impossible settings: one line, exit code 2, no traceback.


class CreatesMarker:
    """A pickle whose loading would create a directory: what a malicious `.bin` would do with worse code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_code_in_a_bin_source_never_runs(tmp_path, weights, capsys):
    # The payload is live: a plain unpickling runs it.
    pickle.loads(pickle.dumps(CreatesMarker(tmp_path / "proof")))
    assert (tmp_path / "proof").is_dir()
    source = copy_source(tmp_path, weights)
    (source / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    torch.save({**weights, "model.norm.weight": CreatesMarker(marker)}, source / "pytorch_model.bin")
    code, error = run_main(["--checkpoint", str(source), "--output", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, error, str(source / "pytorch_model.bin"), "weights_only=True")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGED_SOURCES = {
    "truncated safetensors": (
        lambda source: truncate(source / "model.safetensors"),
        "model.safetensors is not a readable safetensors file",
    ),
    "garbage safetensors": (
        lambda source: (source / "model.safetensors").write_bytes(b"not a safetensors file"),
        "model.safetensors is not a readable safetensors file",
    ),
    "invalid config.json": (
        lambda source: (source / "config.json").write_text('{"hidden_size": 64,'),
        "config.json cannot be read as JSON",
    ),
    "config.json not an object": (
        lambda source: (source / "config.json").write_text("[1, 2]"),
        "config.json holds a JSON list, not an object",
    ),
    "invalid index": (
        lambda source: (source / "model.safetensors.index.json").write_text("{'weight_map': "),
        "model.safetensors.index.json cannot be read as JSON",
    ),
    "index without weight_map": (
        lambda source: (source / "model.safetensors.index.json").write_text('{"metadata": {}}'),
        'model.safetensors.index.json has no "weight_map"',
    ),
    "damaged bin": (
        lambda source: (source / "model.safetensors").rename(source / "pytorch_model.bin"),
        "pytorch_model.bin is not a readable PyTorch state dict",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_SOURCES))
def test_damaged_source_is_a_one_line_error_naming_the_file(tmp_path, source, capsys, case):
    damage, message = DAMAGED_SOURCES[case]
    damage(source)
    code, error = run_main(["--checkpoint", str(source), "--output", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, error, str(source), message)
    assert_no_leftovers(tmp_path, "source")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("a-file/out", "a-file is a file, not a directory"),
        ("a-file/deeper/out", "a-file is a file, not a directory"),
        ("x" * 300, "File name too long"),
    ],
)
def test_impossible_output_is_a_one_line_error(tmp_path, source, capsys, output, message):
    (tmp_path / "a-file").write_text("not a directory\n")
    code, error = run_main(["--checkpoint", str(source), "--output", str(tmp_path / output)], capsys)
    assert_one_line_error(code, error, message)
    assert_no_leftovers(tmp_path, "source", "a-file")


def test_full_disk_is_a_one_line_error_and_leaves_nothing(tmp_path, source, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(vilamp.conversion.convert_vilamp_to_hf, "save_file", full_disk)
    code, error = run_main(["--checkpoint", str(source), "--output", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, error, f"Converting into {tmp_path / 'out'} failed", "No space left on device")
    assert_no_leftovers(tmp_path, "source")


@pytest.mark.parametrize("size", ["lots", "-5GB", "0", "1.5GB"])
def test_bad_shard_size_is_a_one_line_error(tmp_path, source, capsys, size):
    argv = ["--checkpoint", str(source), "--output", str(tmp_path / "out"), f"--max-shard-size={size}"]
    code, error = run_main(argv, capsys)
    assert_one_line_error(code, error, f"--max-shard-size must be a positive size such as 5GB or 500MB, not {size!r}")
    assert_no_leftovers(tmp_path, "source")


def test_vilamp_command_reports_a_refusal_in_one_line(tmp_path, source, capsys):
    from vilamp.cli import main as vilamp_main

    output = tmp_path / "out"
    write_user_files(output)
    code = vilamp_main(["convert", "--checkpoint", str(source), "--output", str(output), "--quiet", "--no-verify"])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("vilamp: error: --output") and error.count("\n") == 1, error
    assert snapshot(output)["unrelated.txt"] == USER_FILES["unrelated.txt"].encode()


# Tensor values: a weight must be floating point and finite, in the source and in the stored dtype.


def with_tensor(weights, key: str, make) -> dict[str, torch.Tensor]:
    return {**weights, key: make(weights[key])}


def with_value(value: float):
    def make(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        tensor.view(-1)[1] = value
        return tensor

    return make


BAD_TENSORS = {
    "int64 model weight": ("model.mm_projector.0.weight", lambda t: t.long(), "float32", "torch.int64"),
    "NaN model weight": ("model.norm.weight", with_value(float("nan")), "float32", "NaN or infinite"),
    "inf model weight": ("model.layers.0.mlp.up_proj.weight", with_value(float("inf")), "float32", "NaN or infinite"),
    "float16 overflow": ("model.mm_projector.2.bias", with_value(1e6), "float16", "beyond the range of torch.float16"),
    "int32 scorer weight": (SCORER_KEY, lambda t: t.int(), "float32", "torch.int32"),
    "NaN scorer weight": (SCORER_KEY, with_value(float("nan")), "float32", "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_non_floating_or_non_finite_weights_are_refused(tmp_path, weights, case):
    key, make, dtype, message = BAD_TENSORS[case]
    source = copy_source(tmp_path, with_tensor(weights, key, make))
    with pytest.raises(ConversionError, match=f"{key!r}.*{message}"):
        convert_checkpoint(source, tmp_path / "out", dtype=dtype, log=quiet)
    assert_no_leftovers(tmp_path, "source")


def test_integer_position_ids_of_the_scorer_are_accepted(tmp_path, weights):
    # transformers 4.x CLIP checkpoints may carry these int64 buffers; they are not weights and are not kept.
    position_ids = {"model.frame_selector.model.text_model.embeddings.position_ids": torch.arange(77)[None]}
    source = copy_source(tmp_path, {**weights, **position_ids})
    convert_checkpoint(source, tmp_path / "out", dtype="float32", log=quiet)
    assert (tmp_path / "out" / "frame_scorer.safetensors").is_file()
