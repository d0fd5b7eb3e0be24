"""
Reading the original checkpoint: where it is (a directory or a Hub id), its config, and its tensors one at a time.

Only safetensors and PyTorch `.bin` files loaded with `weights_only=True` are read, so no pickled code runs.
"""

import json
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


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


def read_json_object(path: Path) -> dict:
    """The JSON object in `path`; raises `ConversionError` naming the file when it is unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError covers invalid JSON and undecodable text
        raise ConversionError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a JSON {type(value).__name__}, not an object.")
    return value


def read_original_config(source: Path) -> dict:
    config_file = source / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"No config.json in {source}.")
    return read_json_object(config_file)


def list_weight_files(source: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors when present, else PyTorch `.bin` files; sharded or not."""
    for index_name, pattern in (
        ("model.safetensors.index.json", "model*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model*.bin"),
    ):
        index_file = source / index_name
        if index_file.is_file():
            names = _indexed_file_names(index_file)
            missing = [name for name in names if not (source / name).is_file()]
            if missing:
                raise ConversionError(f"{index_file} lists weight files that are not there: {missing}.")
            return [source / name for name in names]
        files = sorted(source.glob(pattern))
        if files:
            return files
    raise ConversionError(f"No *.safetensors or *.bin weight files in {source}.")


def _indexed_file_names(index_file: Path) -> list[str]:
    weight_map = read_json_object(index_file).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise ConversionError(f'{index_file} has no "weight_map" object from tensor names to file names.')
    return sorted(set(weight_map.values()))


@contextmanager
def _open_safetensors(weight_file: Path):
    """`safe_open`, with a damaged or truncated file (its header does not match its size) as a `ConversionError`."""
    try:
        handle = safe_open(weight_file, framework="pt")
    except (SafetensorError, OSError) as error:
        raise ConversionError(f"{weight_file} is not a readable safetensors file: {error}") from None
    with handle:
        yield handle


def _load_bin(weight_file: Path) -> dict[str, torch.Tensor]:
    """A PyTorch `.bin` state dict, refused unless it holds tensors only."""
    try:
        # `weights_only` refuses pickled code; `mmap` keeps the file on disk until a tensor is touched.
        state = torch.load(weight_file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        # torch's message runs to several paragraphs and suggests `weights_only=False`, which would run the code.
        raise ConversionError(
            f"{weight_file} is refused by torch.load(weights_only=True): it holds pickled objects other than "
            "tensors, which could run code, or it is damaged. Where the file is trusted, save its tensors as "
            "safetensors."
        ) from None
    except Exception as error:  # torch.load raises many types (RuntimeError, OSError, EOFError) for a damaged file
        raise ConversionError(f"{weight_file} is not a readable PyTorch state dict: {error}") from None
    if not isinstance(state, dict):
        raise ConversionError(f"{weight_file} holds a {type(state).__name__}, not a state dict.")
    for key, value in state.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            raise ConversionError(f"{weight_file} entry {key!r} is a {type(value).__name__}, not a named tensor.")
    return state


def iter_original_tensors(weight_files: Sequence[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yields every source tensor once, one at a time, in a fixed order (files sorted, keys sorted)."""
    seen: set[str] = set()
    for weight_file in weight_files:
        if weight_file.suffix == ".safetensors":
            with _open_safetensors(weight_file) as handle:
                for key in sorted(handle.keys()):
                    yield _first_sighting(key, weight_file, seen), handle.get_tensor(key)
        else:
            state = _load_bin(weight_file)
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
            with _open_safetensors(weight_file) as handle:
                keys.extend(handle.keys())
        else:
            keys.extend(_load_bin(weight_file))
    return keys
