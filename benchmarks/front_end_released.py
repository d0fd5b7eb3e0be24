"""
The released ViLAMP front end, run from a checkout of github.com/steven-ccq/ViLAMP in its own environment
(transformers 4.45; docs/performance.md says how to build it), by `benchmarks.front_end --released-repo PATH
--released-python PY`. Prints one JSON record, as `benchmarks.front_end_run` does for this project's side.

What runs is the released code itself, each stage of `scripts/eval/exp_vMME.py`'s `inference` up to the model:

- `decode`: the script's own `access_video_by_sec` (OpenCV, every `int(fps)`-th frame as a PIL image), its source
  taken from the script file (importing the script would load the 7B model), then the frames stacked as the script
  stacks them;
- `siglip_preprocess`: LLaVA's `SigLipImageProcessor.preprocess` on the stacked frames;
- `clip_preprocess`: transformers' CLIP image processor on the PIL frames, as the script's `CLIPProcessor(images=...)`
  (the OpenAI ViT-B/32 settings its `clip-ViT-B-32/0_CLIPModel` folder holds);
- `score` and `select`: the released `SeqFrameSelector` (K = 32, tau_f = 0.85), with transformers' `CLIPModel`
  ViT-B/32 at random weights from a fixed seed. `score` is the time inside CLIP's image and text forward passes,
  `select` the rest of the selector: similarities, the greedy pass, gap filling.

The question's CLIP tokens are stand-ins of a real question's length: the checkout holds no CLIP vocabulary for
transformers' tokenizer, and tokenising one sentence takes well under a millisecond.

This file runs under the released environment's Python, so it imports nothing from this project.
"""

import argparse
import ast
import contextlib
import importlib
import json
import resource
import sys
import tempfile
import time
import types
from pathlib import Path


# The released selector's settings (`SeqFrameSelector`: max_frame_num, f2f_thrd, f2t_thrd).
SELECTOR_SETTINGS = {"max_frame_num": 32, "f2f_thrd": 0.85, "f2t_thrd": -1}
MAX_FRAMES = 3600  # the Video-MME script's cap in `access_video_by_sec`
QUESTION_TOKENS = 16  # "What does the rabbit do when the butterfly lands on its nose?" with start and end tokens


def read_peak_rss() -> int:
    """Peak resident memory since the last reset (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@contextlib.contextmanager
def stage(record: dict, name: str):
    """Times a stage and records its peak resident memory (VmHWM reset at its start)."""
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    yield
    record["seconds"][name] = time.perf_counter() - start
    record["rss_peak_bytes"][name] = read_peak_rss()


def import_released(repo: Path, module: str) -> types.ModuleType:
    """
    A module of the checkout's `llava` package, without running the package `__init__` files above it, which import
    every model of the package (and DeepSpeed) on the way.
    """
    parts = module.split(".")
    for depth in range(1, len(parts)):
        package = ".".join(parts[:depth])
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [str(repo.joinpath(*parts[:depth]))]
            sys.modules[package] = stub
    return importlib.import_module(module)


def released_function(script: Path, name: str, namespace: dict):
    """The function `name` of a released script, compiled from the script's own source without running the rest."""
    tree = ast.parse(script.read_text(), filename=str(script))
    (definition,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    exec(compile(ast.Module(body=[definition], type_ignores=[]), str(script), "exec"), namespace)
    return namespace[name]


def build_selector(repo: Path):
    """The released `SeqFrameSelector` with a ViT-B/32 `CLIPModel` at random weights (seed 0)."""
    import torch
    from transformers import CLIPConfig

    frame_selector = import_released(repo, "llava.model.multimodal_resampler.frame_selector")
    folder = tempfile.mkdtemp(prefix="released-clip-")
    CLIPConfig().save_pretrained(folder)  # transformers' defaults are OpenAI's ViT-B/32
    torch.manual_seed(0)
    config = types.SimpleNamespace(clip_model_path=folder, **SELECTOR_SETTINGS)
    return frame_selector.SeqFrameSelector(config).eval()


def clip_forward_timer(selector, record: dict) -> None:
    """Adds the time spent inside CLIP's image and text forward passes to `record["clip_forward_seconds"]`."""
    record["clip_forward_seconds"] = 0.0
    for method in ("get_image_features", "get_text_features"):
        forward = getattr(selector.model, method)

        def timed(*args, forward=forward, **kwargs):
            start = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:
                record["clip_forward_seconds"] += time.perf_counter() - start

        setattr(selector.model, method, timed)


def run(repo: Path, video: Path, record: dict) -> list[int]:
    import cv2
    import numpy as np
    import torch
    import transformers
    from PIL import Image
    from transformers import BatchEncoding, CLIPImageProcessor

    record["transformers"] = transformers.__version__

    access_video_by_sec = released_function(
        repo / "scripts" / "eval" / "exp_vMME.py", "access_video_by_sec", {"cv2": cv2, "np": np, "Image": Image}
    )
    image_processor = import_released(repo, "llava.model.multimodal_encoder.siglip_encoder").SigLipImageProcessor()
    clip_image_processor = CLIPImageProcessor()  # OpenAI's ViT-B/32 preprocessing: 224 px, CLIP mean and std
    selector = build_selector(repo)
    clip_forward_timer(selector, record)
    record["rss_after_scorer_bytes"] = read_peak_rss()

    with stage(record, "decode"):
        images = access_video_by_sec(str(video), max_frame_num=MAX_FRAMES)
        video_frames = np.array([np.array(image) for image in images])
    with stage(record, "siglip_preprocess"):
        siglip_pixels = image_processor.preprocess(video_frames, return_tensors="pt")["pixel_values"]
    with stage(record, "clip_preprocess"):
        image_inputs = clip_image_processor(images=images, return_tensors="pt")
    query_ids = torch.tensor([[49406, *range(320, 320 + QUESTION_TOKENS - 2), 49407]])
    query_inputs = BatchEncoding({"input_ids": query_ids, "attention_mask": torch.ones_like(query_ids)})
    with stage(record, "score_and_select"), torch.no_grad():
        is_selected, *_ = selector(image_inputs, query_inputs)
    # The selector's time split into CLIP's forward passes and the rest, as this project's side reports them.
    together = record["seconds"].pop("score_and_select")
    record["seconds"]["score"] = record["clip_forward_seconds"]
    record["seconds"]["select"] = together - record["clip_forward_seconds"]
    peak = record["rss_peak_bytes"].pop("score_and_select")
    record["rss_peak_bytes"].update(score=peak, select=peak)
    record["frames"] = len(images)
    record["held_bytes"] = video_frames.nbytes + siglip_pixels.nbytes + image_inputs["pixel_values"].nbytes
    return is_selected.nonzero()[:, 0].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description="one measurement of the released front end (benchmarks.front_end)")
    parser.add_argument("--repo", type=Path, required=True, help="a checkout of github.com/steven-ccq/ViLAMP")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--memory-limit-gb", type=float, help="address-space cap: allocations past it fail")
    args = parser.parse_args()
    if args.memory_limit_gb:
        limit = int(args.memory_limit_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    record = {"side": "original", "seconds": {}, "rss_peak_bytes": {}}
    try:
        # The checkout prints notices on import (a missing optional decoder): stdout is this record's alone.
        with contextlib.redirect_stdout(sys.stderr):
            keyframes = run(args.repo, args.video, record)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "memory" not in str(error).lower():
            raise
        record["failed"] = f"out of memory: {str(error).splitlines()[0][:200]}"
    else:
        record["total_seconds"] = sum(record["seconds"].values())  # the stages, not the set-up before them
        record["keyframes"] = keyframes
    record["rss_peak_bytes_overall"] = max(record["rss_peak_bytes"].values(), default=read_peak_rss())
    json.dump(record, sys.stdout)


if __name__ == "__main__":
    main()
