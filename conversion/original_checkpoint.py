"""
Reading the original checkpoint: where it is (a directory or a Hub id), its config, and its tensors one at a time.

Only safetensors and PyTorch `.bin` files loaded with `weights_only=True` are read, so no pickled code runs.
"""

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import safe_open


SOURCE_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.tiktoken"]


class ConversionError(ValueError):
    """The source checkpoint cannot be converted as it is; the message names the file or tensor at fault."""


def resolve_checkpoint(checkpoint: str) -> Path:
    """A local directory as is; anything else is taken as a Hub repository id and downloaded (weights and configs)."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    if path.exists() or checkpoint.count("/") != 1:
        raise ConversionError(f"--checkpoint {checkpoint!r} is neither a directory nor a Hub repository id.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(checkpoint, allow_patterns=SOURCE_PATTERNS))
    except Exception as error:  # the Hub client raises many types; the user needs the repo id and the cause
        raise ConversionError(f"Could not download --checkpoint {checkpoint!r} from the Hub: {error}") from error


def read_original_config(source: Path) -> dict:
    config_file = source / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"No config.json in {source}.")
    return json.loads(config_file.read_text())


def list_weight_files(source: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors when present, else PyTorch `.bin` files; sharded or not."""
    for index_name, pattern in (
        ("model.safetensors.index.json", "model*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model*.bin"),
    ):
        index_file = source / index_name
        if index_file.is_file():
            names = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
            missing = [name for name in names if not (source / name).is_file()]
            if missing:
                raise ConversionError(f"{index_file} lists weight files that are not there: {missing}.")
            return [source / name for name in names]
        files = sorted(source.glob(pattern))
        if files:
            return files
    raise ConversionError(f"No *.safetensors or *.bin weight files in {source}.")


def iter_original_tensors(weight_files: Sequence[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields every source tensor once, one at a time, in a fixed order (files sorted, keys sorted)."""
    seen: set[str] = set()
    for weight_file in weight_files:
        if weight_file.suffix == ".safetensors":
            with safe_open(weight_file, framework="pt") as handle:
                for key in sorted(handle.keys()):
                    yield _first_sighting(key, weight_file, seen), handle.get_tensor(key)
        else:
            # `weights_only` refuses pickled code; `mmap` keeps the file on disk until a tensor is touched.
            state = torch.load(weight_file, map_location="cpu", weights_only=True, mmap=True)
            for key in sorted(state):
                yield _first_sighting(key, weight_file, seen), state[key]
            del state


def _first_sighting(key: str, weight_file: Path, seen: set[str]) -> str:
    if key in seen:
        raise ConversionError(f"Tensor {key!r} appears twice in the checkpoint (again in {weight_file.name}).")
    seen.add(key)
    return key


def list_original_keys(weight_files: Sequence[Path]) -> list[str]:
    """All tensor names, without loading any tensor (`.bin` files are memory-mapped)."""
    keys = []
    for weight_file in weight_files:
        if weight_file.suffix == ".safetensors":
            with safe_open(weight_file, framework="pt") as handle:
                keys.extend(handle.keys())
        else:
            keys.extend(torch.load(weight_file, map_location="cpu", weights_only=True, mmap=True))
    return keys
