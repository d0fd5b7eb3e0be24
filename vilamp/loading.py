"""
Loading a ViLAMP model and its processor by name, for the `vilamp` command and the lmms-eval model alike: a local
directory, a Hub id, or the embedded default (a tiny random-weight model). A name that cannot be loaded fails with
one `ModelLoadError` line that names it.
"""

import json
import re
from pathlib import Path


HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


class ModelLoadError(Exception):
    """A model or device that cannot be had, said in one line that names it."""


def gib_to_bytes(gib: float | str) -> int:
    """A budget in GiB (`--cache-gib`, lmms-eval's `cache_gib`) in bytes, as `VilampVideoCache` takes it."""
    return int(float(gib) * 2**30)


def resolve_device(device: str):
    """The `torch.device` that `--device` names; `auto` is CUDA when torch sees one."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA device.")
    return torch.device(device)


def load_model_and_processor(model_id: str | None, device, dtype: str, trust_remote_code: bool = False):
    """
    The model and processor at `model_id` (directory or Hub id), or the embedded default when it is None.

    They are built from this project's classes, which this module registers with the Auto classes by importing
    `modeling_vilamp` and `processing`; the code a model ships beside its weights runs only with `trust_remote_code`
    (`--trust-remote-code`). The model and the processor's frame scorer are both put on `device`: the scorer embeds
    every sampled frame, so on the host it would be the slow part of a GPU run.
    """
    if model_id is None:
        from .tiny import tiny_model_and_processor

        model, processor = tiny_model_and_processor()
    else:
        check_model_source(model_id)  # a mistyped directory fails here at once, not after the Hub client's retries
        model, processor = load_pretrained(model_id, dtype, trust_remote_code)
    processor.frame_scorer.to(device)
    return model.to(device).eval(), processor


def load_pretrained(model_id: str, dtype: str, trust_remote_code: bool):
    """The model and processor saved at `model_id`; a one-line `ModelLoadError` naming it when they cannot load."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from . import processing  # noqa: F401  (registers this project's classes with the Auto classes)

    try:
        model_class, processor_class = (
            shipped_classes(model_id) if trust_remote_code else (AutoModelForImageTextToText, AutoProcessor)
        )
        processor = processor_class.from_pretrained(model_id)
        model = model_class.from_pretrained(model_id, dtype=dtype)
    # safetensors: a damaged weights file; strict dataclasses: a config field of the wrong type.
    except (OSError, ValueError, KeyError, SafetensorError, StrictDataclassError) as error:
        raise ModelLoadError(f"cannot load model {model_id}: {first_line(error)}") from error
    return model, processor


def shipped_classes(model_id: str) -> tuple[type, type]:
    """
    The model and processor classes from the code that `model_id` ships (its configs' `auto_map`). Not through the
    Auto classes: with `trust_remote_code=True` they still prefer the classes registered here for model type "vilamp".
    """
    from transformers import PreTrainedConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    from transformers.processing_utils import ProcessorMixin

    model_map = PreTrainedConfig.get_config_dict(model_id)[0].get("auto_map", {})
    processor_map = ProcessorMixin.get_processor_dict(model_id)[0].get("auto_map", {})
    if "AutoModelForImageTextToText" not in model_map or "AutoProcessor" not in processor_map:
        raise ModelLoadError(f"--trust-remote-code: {model_id} ships no model or processor code (no auto_map)")
    return (
        get_class_from_dynamic_module(model_map["AutoModelForImageTextToText"], model_id),
        get_class_from_dynamic_module(processor_map["AutoProcessor"], model_id),
    )


def check_model_source(model_id: str) -> None:
    """
    Fails in one line naming `model_id` unless it is a ViLAMP model directory or could be a Hub id: a name that
    looks like a path, or any name while the Hub is switched off (`HF_HUB_OFFLINE`), must be a local directory, so
    that a mistyped directory is answered at once instead of after the Hub client's retries.
    """
    if Path(model_id).is_dir():
        check_model_directory(model_id)
    elif not HUB_ID.fullmatch(model_id):
        raise ModelLoadError(f"no such model directory, and not a Hub id: {model_id}")
    elif looks_like_a_path(model_id):
        raise ModelLoadError(f"no such model directory: {model_id}")
    elif hub_offline():
        raise ModelLoadError(f"no such model directory: {model_id} (HF_HUB_OFFLINE is set: the Hub is not asked)")


def looks_like_a_path(model_id: str) -> bool:
    """A name that the Hub id pattern allows but reads as a path: `./run`, `~run`, or `runs/ft2` beside `runs/`."""
    first, _, rest = model_id.partition("/")
    return model_id.startswith((".", "~")) or bool(rest) and Path(first).is_dir()


def hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


def check_model_directory(directory: str) -> None:
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"not a ViLAMP model directory (no config.json): {directory}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (ValueError, AttributeError) as error:  # not JSON, or JSON but not an object
        raise ModelLoadError(
            f"not a ViLAMP model directory (config.json is not a JSON object): {directory}"
        ) from error
    if model_type != "vilamp":  # VilampConfig.model_type, without importing transformers for a typo
        raise ModelLoadError(
            f"not a ViLAMP model directory (its config.json is for model type {model_type!r}): {directory}"
        )


def first_line(error: Exception) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def model_inputs(inputs, device) -> dict:
    """
    The processor's outputs as the model takes them, on `device`: every tensor but the frames, which stay in host
    memory (the model moves a chunk at a time, and none for a video in its `VilampVideoCache`); `video_keys` as they
    are; `video_metadata`, which is for people, left out.
    """
    import torch

    return {
        name: value if name == "pixel_values_videos" or not isinstance(value, torch.Tensor) else value.to(device)
        for name, value in inputs.items()
        if name != "video_metadata"
    }
