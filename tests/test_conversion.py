"""
The converter: original checkpoint -> Hub-ready directory. Each converted fixture, loaded through its shipped code in
a fresh process without this project, reproduces the released outputs in tests/test_remote_code.py.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import FIXTURE_CASES, FIXTURES, load_fixture
from vilamp.conversion.convert_vilamp_to_hf import ConversionError, convert_checkpoint, main
from vilamp.conversion.verify_conversion import verify_conversion


SOURCE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def conversions(tmp_path_factory):
    """Converts a parity fixture in float32 with small shards (so that sharding is exercised), once per module."""
    done: dict[str, tuple[dict, Path]] = {}

    def convert(case: str) -> tuple[dict, Path]:
        if case not in done:
            fixture = load_fixture(case)
            output = tmp_path_factory.mktemp(case) / "converted"
            convert_checkpoint(fixture["dir"], output, dtype="float32", max_shard_size="200KB", log=quiet)
            done[case] = fixture, output
        return done[case]

    return convert


@pytest.fixture(params=FIXTURE_CASES)
def converted(request, conversions) -> tuple[dict, Path]:
    """Each parity fixture, converted."""
    return conversions(request.param)


def copy_source(tmp_path: Path, weights: dict[str, torch.Tensor], case: str = "partial-fill") -> Path:
    """An original-layout checkpoint directory holding `weights` and the fixture's config and tokenizer."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCE_FILES:
        shutil.copy(FIXTURES / case / name, source / name)
    save_file(weights, source / "model.safetensors")
    return source


def converted_tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for weight_file in sorted(directory.glob("model*.safetensors")):
        tensors.update(load_file(weight_file))
    return tensors


def test_verification_reproduces_the_original(converted):
    fixture, output = converted
    report = verify_conversion(fixture["dir"], output)
    checks = [check for check, _, _ in report.rows]
    assert report.passed
    assert "fixture: logits" in checks and "fixture: greedy tokens" in checks and "fixture: keyframes" in checks


def test_output_layout_has_no_pickle_files(converted):
    _, output = converted
    names = {path.name for path in output.iterdir()}
    assert {"config.json", "generation_config.json", "README.md", "chat_template.jinja"} <= names
    assert {"tokenizer.json", "processor_config.json", "frame_scorer.safetensors", "frame_scorer_config.json"} <= names
    assert {"configuration_vilamp.py", "modeling_vilamp.py", "processing_vilamp.py", "keyframes.py"} <= names
    assert "model.safetensors.index.json" in names
    allowed = {".json", ".safetensors", ".py", ".md", ".jinja"}
    assert {path.suffix for path in output.iterdir()} <= allowed
    for path in output.glob("*.safetensors"):
        with safe_open(path, framework="pt") as handle:  # a pickle would not parse as safetensors
            assert handle.metadata()["format"] == "pt"


def test_sharded_index_covers_every_tensor_once(converted):
    _, output = converted
    index = json.loads((output / "model.safetensors.index.json").read_text())
    shards = sorted(output.glob("model-*.safetensors"))
    assert len(shards) > 1
    per_shard = {shard.name: set(load_file(shard)) for shard in shards}
    assert set(index["weight_map"].values()) == set(per_shard)
    for key, shard in index["weight_map"].items():
        assert key in per_shard[shard]
    assert sum(len(keys) for keys in per_shard.values()) == len(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in converted_tensors(output).values()
    )


def test_config_tokenizer_processor_and_generation_config(converted):
    fixture, output = converted
    config = json.loads((output / "config.json").read_text())
    original = fixture["config"]
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vilamp.VilampConfig",
        "AutoModel": "modeling_vilamp.VilampModel",
        "AutoModelForImageTextToText": "modeling_vilamp.VilampForConditionalGeneration",
    }
    # Keyframe selection is the processor's alone.
    assert "num_keyframes" not in config and "keyframe_similarity_threshold" not in config
    processor_config = json.loads((output / "processor_config.json").read_text())
    assert processor_config["num_keyframes"] == original["max_frame_num"]
    assert processor_config["keyframe_similarity_threshold"] == original["f2f_thrd"]
    # The original removed the tower's last layer: one fewer layer than its own config says.
    assert config["vision_config"]["num_hidden_layers"] == original["vision_tower_config"]["num_hidden_layers"] - 1
    assert config["text_config"]["hidden_size"] == original["hidden_size"]
    tokenizer = json.loads((output / "tokenizer.json").read_text())
    added = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    assert added["<video>"] == config["video_token_id"] == 499
    generation = json.loads((output / "generation_config.json").read_text())
    assert sorted(generation["eos_token_id"]) == sorted([added["<|im_end|>"], added["<|endoftext|>"]])
    processor = json.loads((output / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing_vilamp.VilampProcessor"}
    side = original["vision_tower_config"]["image_size"]
    video_processor = json.loads((output / "video_preprocessor_config.json").read_text())
    for saved in (processor["video_processor"], video_processor):
        assert saved["video_processor_type"] == "VilampVideoProcessor"
        assert saved["size"] == {"height": side, "width": side} and (saved["fps"], saved["max_frames"]) == (1.0, 600)
    assert video_processor["auto_map"]["AutoVideoProcessor"] == "video_processing_vilamp.VilampVideoProcessor"


def test_model_card_metadata_and_usage(converted):
    _, output = converted
    card = (output / "README.md").read_text()
    front_matter = card.split("---\n")[1]
    assert "library_name: transformers" in front_matter
    assert "pipeline_tag: video-text-to-text" in front_matter
    assert "license: other" in front_matter and "license_link:" in front_matter
    assert "trust_remote_code=True" in card and "vilamp ask" in card
    assert "@article{cheng2025vilamp" in card
    assert f'repo = "{output}"' in card


def test_converting_twice_is_byte_identical(tmp_path):
    source = FIXTURES / "heavy-fill"
    first, second = tmp_path / "first", tmp_path / "second"
    for output in (first, second):
        convert_checkpoint(source, output, dtype="bfloat16", max_shard_size="300KB", log=quiet)
    binary = sorted(p.name for p in first.glob("*.safetensors"))
    assert len(binary) > 2 and binary == sorted(p.name for p in second.glob("*.safetensors"))
    for name in binary + ["model.safetensors.index.json"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_default_dtype_is_bfloat16_and_verifies_before_the_move(tmp_path, monkeypatch):
    import vilamp.conversion.verify_conversion

    verified = []

    def recording_verification(source, directory):
        verified.append(Path(directory))
        return verify_conversion(source, directory)

    monkeypatch.setattr(vilamp.conversion.verify_conversion, "verify_conversion", recording_verification)
    output = tmp_path / "out"
    assert main(["--checkpoint", str(FIXTURES / "partial-fill"), "--output", str(output)]) == 0
    # Verified (trust_remote_code included) in a temporary directory beside the output, under the output's name
    # because transformers caches a directory's code by its name; then moved into place, nothing left behind.
    [staging] = verified
    assert staging.name == "out" and staging.parent.name.startswith(".out.partial-")
    assert staging.parent.parent == tmp_path and sorted(tmp_path.iterdir()) == [output]
    tensors = converted_tensors(output)
    assert {tensor.dtype for tensor in tensors.values()} == {torch.bfloat16}
    # The frame scorer runs in float32 on the CPU inside the processor, whatever the model's dtype.
    assert {tensor.dtype for tensor in load_file(output / "frame_scorer.safetensors").values()} == {torch.float32}
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"


def test_bin_and_sharded_sources_convert_like_safetensors(tmp_path):
    weights = load_fixture("partial-fill")["weights"]
    reference = tmp_path / "reference"
    convert_checkpoint(FIXTURES / "partial-fill", reference, dtype="float32", log=quiet)
    expected = converted_tensors(reference)

    bin_source = copy_source(tmp_path, weights)
    (bin_source / "model.safetensors").unlink()
    keys = sorted(weights)
    halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
    for name, shard_keys in halves.items():
        torch.save({key: weights[key] for key in shard_keys}, bin_source / name)
    weight_map = {key: name for name, shard_keys in halves.items() for key in shard_keys}
    (bin_source / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))

    output = tmp_path / "from-bin"
    convert_checkpoint(bin_source, output, dtype="float32", log=quiet)
    actual = converted_tensors(output)
    assert sorted(actual) == sorted(expected)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ("missing", "model.language_model.norm.weight"),
        ("extra", "model.mystery_head.weight"),
        ("shape", "model.mm_projector.0.weight"),
        ("scorer", "missing .*model.frame_selector.model.text_projection.weight"),
    ],
)
def test_corrupted_source_fails_naming_the_tensor(tmp_path, corruption, message):
    weights = dict(load_fixture("partial-fill")["weights"])
    if corruption == "missing":
        del weights["model.norm.weight"]
    elif corruption == "extra":
        weights["model.mystery_head.weight"] = torch.zeros(2, 2)
    elif corruption == "shape":
        weights["model.mm_projector.0.weight"] = weights["model.mm_projector.0.weight"][:, :-1].contiguous()
    else:
        del weights["model.frame_selector.model.text_projection.weight"]
    source = copy_source(tmp_path, weights)
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(source, tmp_path / "out", dtype="float32", log=quiet)


def test_command_line_reports_errors_in_one_line(tmp_path, capsys):
    weights = dict(load_fixture("partial-fill")["weights"])
    weights["model.mystery_head.weight"] = torch.zeros(2, 2)
    source = copy_source(tmp_path, weights)
    assert main(["--checkpoint", str(source), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: Unknown tensor 'model.mystery_head.weight'") and error.count("\n") == 1


def test_hub_id_is_downloaded_and_push_uploads_the_folder(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append(("download", repo_id, tuple(allow_patterns)))
        return str(FIXTURES / "partial-fill")

    def fake_create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs.get("private")))

    def fake_upload_folder(self, repo_id, folder_path, **kwargs):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return "https://huggingface.co/someone/vilamp-hf/commit/0"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    output = tmp_path / "out"
    argv = [
        "--checkpoint",
        "orange-sk/ViLAMP-llava-qwen",
        "--output",
        str(output),
        "--push-to-hub",
        "someone/vilamp-hf",
    ]
    assert main([*argv, "--no-verify"]) == 0
    assert calls[0][:2] == ("download", "orange-sk/ViLAMP-llava-qwen") and "*.safetensors" in calls[0][2]
    assert calls[1] == ("create_repo", "someone/vilamp-hf", False)
    assert calls[2][0:2] == ("upload", "someone/vilamp-hf") and "model.safetensors" in calls[2][2]
    card = (output / "README.md").read_text()
    assert "- orange-sk/ViLAMP-llava-qwen" in card and 'repo = "someone/vilamp-hf"' in card


def test_unreachable_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConversionError, match="orange-sk/ViLAMP-llava-qwen.*offline"):
        convert_checkpoint("orange-sk/ViLAMP-llava-qwen", tmp_path / "out", log=quiet)
    with pytest.raises(ConversionError, match="neither a directory nor a Hub repository id"):
        convert_checkpoint(str(tmp_path / "no" / "such" / "dir"), tmp_path / "out", log=quiet)
