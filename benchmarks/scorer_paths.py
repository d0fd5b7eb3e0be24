"""
`python -m benchmarks.scorer_paths [--chunks 8] [--chunk-size 32] [--compile]`

Ways of running the frame scorer's image forward (CLIP ViT-B/32, the released scorer's size, random weights) over
the same chunks, timed in turns within one process, each against the plain forward the processor runs:

- `plain`: `encode_image` under `torch.no_grad()` (what `FrameScorer.embed_pixels` does);
- `inference_mode`: the same under `torch.inference_mode()`;
- `channels_last`: the patch convolution's weights and the inputs in channels-last memory order;
- `compiled` (with `--compile`): `torch.compile` of `encode_image`; its compile time is reported apart.

docs/performance.md ("The front end against the released code") asks whether a cheaper scorer path keeps the same
keyframes; this prints, per path, the median seconds per chunk, the ratio to `plain`, and the largest difference of
its embeddings from `plain`'s (0 keeps every keyframe; anything else changes the scorer's numerics).
"""

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from vilamp.conversion.checkpoint_mapping import KNOWN_FRAME_SCORERS
from vilamp.processing import FrameScorer


def scorer_paths(compiled: bool) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable]]:
    """Each path: a function from a chunk of CLIP inputs to embeddings, and the gradient mode it runs under."""
    torch.manual_seed(0)
    model = FrameScorer(KNOWN_FRAME_SCORERS["clip-ViT-B-32/0_CLIPModel"]).model
    channels_last = copy.deepcopy(model)
    channels_last.visual.conv1.to(memory_format=torch.channels_last)
    paths = {
        "plain": (model.encode_image, torch.no_grad),
        "inference_mode": (model.encode_image, torch.inference_mode),
        "channels_last": (
            lambda pixels: channels_last.encode_image(pixels.contiguous(memory_format=torch.channels_last)),
            torch.no_grad,
        ),
    }
    if compiled:
        paths["compiled"] = (torch.compile(copy.deepcopy(model).encode_image), torch.no_grad)
    return paths


def timed(function: Callable, pixels: torch.Tensor, mode: Callable) -> tuple[float, torch.Tensor]:
    with mode():
        start = time.perf_counter()
        embeds = function(pixels)
        return time.perf_counter() - start, embeds.clone()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=8, help="chunks timed per path (after one warm-up chunk)")
    parser.add_argument("--chunk-size", type=int, default=32, help="frames per chunk, as the processor scores them")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (about a minute to compile)")
    args = parser.parse_args(argv)
    paths = scorer_paths(args.compile)
    warm_up = torch.randn(args.chunk_size, 3, 224, 224)
    for name, (function, mode) in paths.items():
        seconds, _ = timed(function, warm_up, mode)
        if name == "compiled":
            print(f"compiled: compiling and the first chunk took {seconds:.1f} s")
    times = {name: [] for name in paths}
    differences = dict.fromkeys(paths, 0.0)
    for chunk in range(args.chunks):
        pixels = torch.randn(args.chunk_size, 3, 224, 224, generator=torch.Generator().manual_seed(chunk))
        reference = None
        for name, (function, mode) in paths.items():  # in turns, so that a slow spell falls on every path
            seconds, embeds = timed(function, pixels, mode)
            times[name].append(seconds)
            reference = embeds if reference is None else reference  # `plain` runs first
            differences[name] = max(differences[name], float((embeds - reference).abs().max()))
    plain = statistics.median(times["plain"])
    print(f"\n| path | s per chunk of {args.chunk_size} | / plain | largest embedding difference from plain |")
    print("|---|---:|---:|---:|")
    for name in paths:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {median / plain:.2f} | {differences[name]:.1e} |")


if __name__ == "__main__":
    main()
