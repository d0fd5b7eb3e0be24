"""
Converts the released ViLAMP checkpoint (`orange-sk/ViLAMP-llava-qwen`, LLaVA-NeXT layout) into a repository that
`AutoModelForImageTextToText` and `AutoProcessor` load with `trust_remote_code=True`:

    python -m vilamp.conversion.convert_vilamp_to_hf --checkpoint orange-sk/ViLAMP-llava-qwen --output ViLAMP-hf

Tensors are read one at a time and written shard by shard, so peak memory is about one output shard, not the model.
Each source tensor is routed by `checkpoint_mapping` (model, frame scorer, or an explicit drop with its reason);
unknown, missing, misshapen, non-floating and non-finite tensors stop the conversion with an error naming them.
Everything is written (and verified) in a temporary directory beside the output, which takes the output's place
only when all of it succeeded.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from transformers import AutoTokenizer, GenerationConfig, PreTrainedConfig
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils.hub import convert_file_size_to_int

from ..modeling_vilamp import VilampConfig, VilampForConditionalGeneration
from ..processing import FrameScorer, VilampProcessor, VilampVideoProcessor
from .arguments import DTYPE_NAMES, VERIFY_BY_DEFAULT_MAX_PARAMETERS, add_conversion_arguments
from .checkpoint_mapping import (
    cast_weight,
    check_frame_scorer_tensors,
    convert_frame_scorer_state_dict,
    convert_original_config,
    count_vision_layers,
    frame_scorer_config,
    is_position_ids,
    keyframe_selection_settings,
    route_original_key,
    to_model_layout,
)
from .model_card import render_model_card
from .original_checkpoint import (
    ConversionError,
    iter_original_tensors,
    list_original_keys,
    list_weight_files,
    read_original_config,
    resolve_checkpoint,
)


DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
VIDEO_TOKEN = "<video>"
# Turn ends of the Qwen chat format; generation stops at either.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass
class ShardWriter:
    """
    Writes tensors into safetensors shards of at most `max_shard_size` bytes as they arrive (a tensor larger than
    that gets a shard of its own), then names them as transformers does and writes the index.
    """

    directory: Path
    max_shard_size: int
    _pending: dict[str, torch.Tensor] = field(default_factory=dict)
    _pending_bytes: int = 0
    _shard_keys: list[list[str]] = field(default_factory=list)
    total_size: int = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_size:
            self._flush()
        self._pending[key] = tensor.contiguous()
        self._pending_bytes += size
        self.total_size += size

    def _flush(self) -> None:
        save_file(self._pending, self._temporary_name(len(self._shard_keys)), metadata={"format": "pt"})
        self._shard_keys.append(sorted(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def _temporary_name(self, index: int) -> Path:
        return self.directory / f".shard-{index}.safetensors.partial"

    def finish(self) -> list[str]:
        """Writes the last shard, gives every shard its final name, writes the index; returns the file names."""
        if self._pending:
            self._flush()
        count = len(self._shard_keys)
        if count == 1:
            names = ["model.safetensors"]
        else:
            names = [f"model-{index + 1:05d}-of-{count:05d}.safetensors" for index in range(count)]
        for index, name in enumerate(names):
            os.replace(self._temporary_name(index), self.directory / name)
        if count > 1:
            weight_map = {key: name for name, keys in zip(names, self._shard_keys, strict=True) for key in keys}
            index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return names


def meta_model(config: VilampConfig) -> VilampForConditionalGeneration:
    """The target model without storage: its state dict gives every expected key and shape."""
    with torch.device("meta"):
        return VilampForConditionalGeneration(config)


def convert_weights(
    weight_files: Sequence[Path],
    expected: dict[str, torch.Tensor],
    writer: ShardWriter,
    dtype: torch.dtype,
    log=print,
) -> dict[str, torch.Tensor]:
    """
    Streams the source tensors into `writer` (model tensors, floating point ones cast to `dtype`) and returns the
    frame scorer's tensors in transformers' CLIPModel layout, float32. `expected` holds the model's tensors (on the
    meta device: shapes and dtypes). Raises `ConversionError` for an unknown key, a shape that does not match, a
    model tensor the checkpoint lacks, and a tensor that is not floating point or not finite where a floating point
    one is needed: each tensor is checked as it arrives, before anything is built from it.
    """
    scorer_tensors: dict[str, torch.Tensor] = {}
    written: set[str] = set()
    dropped: dict[str, list[str]] = {}
    for key, tensor in iter_original_tensors(weight_files):
        try:
            destination, target = route_original_key(key)
            if destination == "frame_scorer":
                # Stored in float32 (it runs on the CPU); the integer position-id buffers are not kept.
                scorer_tensors[target] = tensor if is_position_ids(target) else cast_weight(key, tensor, torch.float32)
            elif destination == "dropped":
                dropped.setdefault(target, []).append(key)
            elif destination == "model":
                writer.add(target, convert_model_tensor(key, to_model_layout(target, tensor), target, expected, dtype))
                written.add(target)
        except (KeyError, ValueError) as error:
            raise ConversionError(error.args[0]) from None
    missing = sorted(set(expected) - written)
    if missing:
        raise ConversionError(f"The checkpoint lacks {len(missing)} model tensors: {', '.join(missing)}.")
    for reason, keys in dropped.items():
        log(f"Dropped {len(keys)} tensors ({keys[0]}, ...): {reason}")
    return scorer_tensors


def convert_model_tensor(
    key: str, tensor: torch.Tensor, target: str, expected: dict[str, torch.Tensor], dtype: torch.dtype
) -> torch.Tensor:
    """Source tensor `key`, checked against the model's tensor `target` and cast to `dtype` when floating point."""
    if target not in expected:
        raise ConversionError(f"Source tensor {key!r} maps to {target!r}, which the model does not have.")
    if tensor.shape != expected[target].shape:
        raise ConversionError(
            f"Source tensor {key!r} has shape {tuple(tensor.shape)}; {target!r} needs {tuple(expected[target].shape)}."
        )
    return cast_weight(key, tensor, dtype) if expected[target].is_floating_point() else tensor


def build_frame_scorer(original_config: dict, clip_tensors: dict[str, torch.Tensor]) -> FrameScorer:
    """The frame scorer in open_clip's layout, float32 (it runs on the CPU inside the processor)."""
    try:
        check_frame_scorer_tensors(original_config, clip_tensors)
    except (KeyError, ValueError) as error:
        raise ConversionError(error.args[0]) from None
    state_dict = convert_frame_scorer_state_dict({key: tensor.float() for key, tensor in clip_tensors.items()})
    return FrameScorer(frame_scorer_config(original_config), state_dict)


def load_tokenizer_with_video_token(source: Path):
    """The checkpoint's Qwen2 tokenizer with `<video>` added as a special token (kept if already there)."""
    try:
        # A blank config keeps AutoTokenizer from parsing the original config (model type "llava_qwen", unknown to
        # transformers); the tokenizer class comes from tokenizer_config.json.
        tokenizer = AutoTokenizer.from_pretrained(source, config=PreTrainedConfig())
    except (OSError, ValueError) as error:
        raise ConversionError(f"Could not load the tokenizer from {source}: {error}") from None
    if VIDEO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
    return tokenizer


def build_generation_config(source: Path, tokenizer) -> GenerationConfig:
    """The checkpoint's generation config when it ships one, else greedy decoding that stops at the turn's end."""
    if (source / "generation_config.json").is_file():
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise ConversionError(f"{source / 'generation_config.json'}: {error}") from None
    else:
        vocab = tokenizer.get_vocab()
        generation_config = GenerationConfig(
            do_sample=False,
            eos_token_id=[vocab[token] for token in STOP_TOKENS if token in vocab] or None,
        )
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    return generation_config


def build_config(original_config: dict, num_vision_layers: int, video_token_id: int, dtype: torch.dtype):
    try:
        config = VilampConfig(**convert_original_config(original_config, num_vision_layers, video_token_id))
    except (KeyError, ValueError) as error:
        raise ConversionError(f"config.json: {error}") from None
    vocab_size = config.text_config.vocab_size
    if video_token_id >= vocab_size:
        raise ConversionError(
            f"The tokenizer gives {VIDEO_TOKEN} id {video_token_id}, past the {vocab_size} embedding rows."
        )
    config.architectures = [VilampForConditionalGeneration.__name__]
    config.dtype = dtype
    return config


def parse_shard_size(max_shard_size: str | int) -> int:
    """Bytes in a size such as `5GB` or `500MB` (transformers' notation, where a lowercase `b` means bits)."""
    message = f"--max-shard-size must be a positive size such as 5GB or 500MB, not {max_shard_size!r}."
    try:
        size = convert_file_size_to_int(max_shard_size)
    except ValueError:
        raise ConversionError(message) from None
    if size <= 0:
        raise ConversionError(message)
    return size


def resolve_output(output: str | os.PathLike, overwrite: bool) -> Path:
    """
    The output directory as an absolute path, symlinks resolved. Refuses an empty path (an unset shell variable
    would otherwise name the current directory), a file, a path below a file, and a directory that holds anything
    unless `overwrite`.
    """
    if not os.fspath(output):
        raise ConversionError("--output is empty.")
    path = Path(os.path.realpath(output))
    try:
        if path.is_dir():
            if not overwrite and any(path.iterdir()):
                raise ConversionError(
                    f"--output {path} is not empty; choose a new or empty directory, or pass --overwrite to replace "
                    "it and everything in it."
                )
        elif path.exists():
            raise ConversionError(f"--output {path} is a file, not a directory.")
        else:
            nearest = next(parent for parent in path.parents if parent.exists())
            if not nearest.is_dir():
                raise ConversionError(f"--output {path} cannot be created: {nearest} is a file, not a directory.")
    except OSError as error:  # a name too long, a directory that cannot be listed
        raise ConversionError(f"--output {path} cannot be used: {error}") from None
    return path


@contextmanager
def staged_output(output: Path, overwrite: bool, log=print) -> Iterator[Path]:
    """
    Yields an empty directory to write the conversion into. It lies in a temporary directory beside `output` (the
    same file system, so that moving it is a rename) and bears `output`'s name: trust_remote_code copies a
    directory's code into the modules cache under the directory's name, so verifying it there imports the code as
    loading `output` later will, and leaves no cache folder named after a random directory. When the block succeeds
    it becomes `output`, replacing the old one when `overwrite`; when anything fails, the temporary directory and
    the parents made for it are removed and `output` is left as it was.
    """
    made_parents = [parent for parent in output.parents if not parent.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        workspace = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    except OSError as error:
        remove_empty_directories(made_parents)
        raise ConversionError(f"Cannot write beside --output {output}: {error}") from None
    replacing = overwrite and output.exists()
    try:
        staging = workspace / output.name
        staging.mkdir()
        yield staging
        move_into_place(staging, output, aside=workspace / f"{output.name}.replaced" if replacing else None)
    except BaseException as error:
        # Best effort: the error being raised is the one to report.
        shutil.rmtree(workspace, ignore_errors=True)
        remove_empty_directories(made_parents)
        # safetensors reports a failed write (a full disk) as its own error, not as an OSError.
        if isinstance(error, (OSError, SafetensorError)):
            raise ConversionError(f"Converting into {output} failed: {error}") from error
        raise
    try:
        shutil.rmtree(workspace)  # holds the replaced directory, if any
    except OSError as error:
        raise ConversionError(f"Converted into {output}, but could not delete {workspace}: {error}") from error
    if replacing:
        log(f"Replaced the previous contents of {output}")


def move_into_place(staging: Path, output: Path, aside: Path | None) -> None:
    """
    Renames `staging` to `output`. When `aside` is given, the existing `output` is renamed there first and put back
    if the second rename fails, so that the path ends with the old directory or the new one, never neither.
    """
    if aside is None:
        os.rename(staging, output)  # onto a missing path or an empty directory; a non-empty one is refused
        return
    os.rename(output, aside)
    try:
        os.rename(staging, output)
    except OSError:
        os.rename(aside, output)
        raise


def remove_empty_directories(directories: Sequence[Path]) -> None:
    """Removes `directories`, deepest first, stopping at one that is gone or holds something (not ours alone)."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def write_repository(
    source: Path,
    directory: Path,
    dtype: str,
    max_shard_bytes: int,
    source_repo_id: str | None,
    license_id: str | None,
    repo_id: str,
    log=print,
) -> None:
    """
    Writes the converted repository for the checkpoint in `source` into the empty `directory`: weights, config and
    code, tokenizer, processor, frame scorer, generation config and the model card (naming `repo_id`).
    """
    original_config = read_original_config(source)
    weight_files = list_weight_files(source)
    log(f"Reading {len(weight_files)} weight file(s) from {source}")
    tokenizer = load_tokenizer_with_video_token(source)
    video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    try:
        num_vision_layers = count_vision_layers(list_original_keys(weight_files))
    except KeyError as error:
        raise ConversionError(error.args[0]) from None
    config = build_config(original_config, num_vision_layers, video_token_id, DTYPES[dtype])

    target = meta_model(config)
    expected = target.state_dict()
    writer = ShardWriter(directory, max_shard_bytes)
    clip_tensors = convert_weights(weight_files, expected, writer, DTYPES[dtype], log=log)
    shard_names = writer.finish()
    size_mb = writer.total_size / 1e6
    log(f"Wrote {len(expected)} tensors ({size_mb:,.1f} MB, {dtype}) in {len(shard_names)} shard(s)")

    # Registers both auto classes in `auto_map` (AutoModel loads the base model) and copies the code files.
    for module in (target, target.model):
        custom_object_save(module, directory, config=config)
    config.save_pretrained(directory)
    build_generation_config(source, tokenizer).save_pretrained(directory)
    image_size = config.vision_config.image_size
    processor = VilampProcessor(
        tokenizer=tokenizer,
        frame_scorer=build_frame_scorer(original_config, clip_tensors),
        video_token=VIDEO_TOKEN,
        **keyframe_selection_settings(original_config),
        tokens_per_keyframe=target.model.tokens_per_keyframe,
        video_processor=VilampVideoProcessor(size={"height": image_size, "width": image_size}),
    )
    processor.save_pretrained(directory)
    card = render_model_card(
        target.model, processor, source_repo_id=source_repo_id, license_id=license_id, repo_id=repo_id
    )
    (directory / "README.md").write_text(card)
    log(f"Wrote config, code, tokenizer ({VIDEO_TOKEN} = {video_token_id}), processor, frame scorer and model card")


def verify_when_asked(source: Path, directory: Path, verify: bool | None, log=print) -> None:
    """Verifies `directory` against `source` when `verify` is true, or when it is None and the model is small."""
    from .verify_conversion import count_model_parameters, verify_conversion

    if verify is None:
        verify = count_model_parameters(directory) <= VERIFY_BY_DEFAULT_MAX_PARAMETERS
        if not verify:
            log("Skipping verification for a model this large; pass --verify to run it.")
    if verify:
        for line in verify_conversion(source, directory).lines():
            log(line)


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    dtype: str = "bfloat16",
    max_shard_size: str | int = "5GB",
    source_repo_id: str | None = None,
    license_id: str | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
    verify: bool | None = False,
    log=print,
) -> tuple[Path, Path]:
    """
    Converts `checkpoint` (a directory or Hub id) into `output`: weights, config and code, tokenizer, processor,
    frame scorer, generation config and model card. With `verify` (None: when the model has at most 1B parameters)
    the result is then reloaded and compared with the source. All of it happens in a temporary directory beside
    `output`, which takes `output`'s place only when everything succeeded; a failure leaves `output` as it was.
    `output` must be missing or empty unless `overwrite`, which replaces it whole. Returns the source directory that
    was read (the download, for a Hub id) and the output directory.
    """
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {sorted(DTYPES)}, not {dtype!r}.")
    max_shard_bytes = parse_shard_size(max_shard_size)
    destination = resolve_output(output, overwrite)
    source = resolve_checkpoint(str(checkpoint))
    source_path = Path(os.path.realpath(source))
    # Replacing a directory that holds the source would delete the source.
    if destination == source_path or destination in source_path.parents:
        raise ConversionError(f"--output {destination} must not be --checkpoint or a directory that holds it.")
    with staged_output(destination, overwrite, log=log) as staging:
        write_repository(
            source,
            staging,
            dtype,
            max_shard_bytes,
            source_repo_id=source_repo_id or (str(checkpoint) if not Path(checkpoint).is_dir() else None),
            license_id=license_id,
            repo_id=repo_id or str(Path(output)),
            log=log,
        )
        verify_when_asked(source, staging, verify, log=log)
    return source, Path(output)


def push_to_hub(output: Path, repo_id: str, private: bool = False, log=print) -> str:
    """Creates `repo_id` if needed and uploads the converted directory in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=output,
        commit_message="Add ViLAMP converted for transformers (trust_remote_code)",
    )
    log(f"Uploaded {output} to https://huggingface.co/{repo_id}")
    return str(getattr(commit, "commit_url", commit))


def run(args: argparse.Namespace, log=print) -> int:
    """Runs a parsed command line: convert and verify (when asked or small) into place, push when asked. Returns 0."""
    _, output = convert_checkpoint(
        args.checkpoint,
        args.output,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        source_repo_id=args.source_repo_id,
        license_id=args.license_id,
        repo_id=args.push_to_hub,
        overwrite=args.overwrite,
        verify=args.verify,
        log=log,
    )
    if args.push_to_hub:
        push_to_hub(output, args.push_to_hub, private=args.private, log=log)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vilamp.conversion.convert_vilamp_to_hf", description=__doc__.split("\n\n")[0].strip()
    )
    args = add_conversion_arguments(parser).parse_args(argv)
    try:
        return run(args)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
