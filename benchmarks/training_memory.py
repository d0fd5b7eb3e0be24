"""
Peak memory of one training step (forward and backward) on the tiny model with real 384 px frames, by activation
checkpointing mode, each measurement in a process of its own:

- `none`: no checkpointing;
- `layers`: what `gradient_checkpointing_enable()` did before chunk checkpointing: the SigLIP and Qwen2 layers only;
- `chunks`: `gradient_checkpointing_enable()` now: also each vision chunk as a whole (tower, pooling, merging).

    python -m benchmarks.training_memory --frames 64,256,1024 --repeats 1

Peak memory repeats to the MB between runs, so one run per point is enough. Prints a table of median peak RSS
increase (the frames included) and the memory per extra frame, and writes
`training-memory.json` and a picture of it, `training-memory.png`, in `--output-dir` (`benchmarks/results`).

The children run with glibc's mmap threshold fixed at 128 KB (`MALLOC_MMAP_THRESHOLD_`). By default glibc raises the
threshold after large blocks are freed, then serves them from the heap, which the small blocks that outlive each
vision chunk (its tokens, autograd's records) keep from shrinking: resident memory then grows with the frames by
about 1 MB each although the tensors alive do not. Fixed, freed blocks go back to the system and peak RSS measures
what is alive.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from vilamp.processing import num_visual_tokens

from .measure import NUM_KEYFRAMES, build, read_peak_rss, reset_peak_rss
from .plotting import headless_pyplot
from .run import run_json_module


MODES = ("none", "layers", "chunks")
LABELS = {
    "none": "no checkpointing",
    "layers": "layers checkpointed (before)",
    "chunks": "vision chunks checkpointed (now)",
}
FRAME_BYTES = 3 * 384 * 384
MMAP_THRESHOLD = 128 * 1024


def training_step(num_frames: int, mode: str) -> int:
    """Peak RSS increase, in bytes, of making `num_frames` frames and running one training step on them."""
    model, _ = build("tiny", torch.device("cpu"))
    model.train()
    if mode in ("layers", "chunks"):
        model.activation_checkpointing_enable()
    if mode == "layers":
        model.model.gradient_checkpointing = False
    generator = torch.Generator().manual_seed(num_frames)
    keyframes = min(NUM_KEYFRAMES, num_frames)
    num_visual = num_visual_tokens(num_frames, keyframes, model.model.tokens_per_keyframe)
    video_token = model.config.video_token_id
    input_ids = torch.tensor([[5, 6, *([video_token] * num_visual), 8, 9, 10, 11]])
    labels = torch.full_like(input_ids, -100)
    labels[0, -4:] = input_ids[0, -4:]
    reset_peak_rss()
    before = read_peak_rss()
    frames = torch.randint(0, 256, (num_frames, 3, 384, 384), dtype=torch.uint8, generator=generator)
    keyframe_mask = torch.zeros(num_frames, dtype=torch.bool)
    keyframe_mask[torch.linspace(0, num_frames - 1, keyframes).long()] = True
    query = torch.randn(1, model.config.query_embed_dim, generator=generator)
    loss = model(
        input_ids=input_ids, labels=labels, pixel_values_videos=frames, keyframe_mask=keyframe_mask, query_embeds=query
    ).loss
    loss.backward()
    return read_peak_rss() - before


def measure_in_subprocess(num_frames: int, mode: str) -> int:
    arguments = ["--child", str(num_frames), mode]
    environment = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    return run_json_module("benchmarks.training_memory", arguments, f"{mode} at {num_frames} frames", environment)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="64,256,1024", help="comma-separated frame counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--child", nargs=2, metavar=("FRAMES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(training_step(int(args.child[0]), args.child[1]))
        return
    frame_counts = [int(count) for count in args.frames.split(",")]
    results = {mode: {} for mode in MODES}
    for num_frames in frame_counts:
        for repeat in range(args.repeats):
            for mode in MODES:  # alternating, so that a slow moment of the machine is shared
                results[mode].setdefault(num_frames, []).append(measure_in_subprocess(num_frames, mode))
                print(f"{num_frames} frames, {mode}, run {repeat + 1}: {results[mode][num_frames][-1] / 2**20:.0f} MB")
    medians = {mode: {n: statistics.median(values) for n, values in runs.items()} for mode, runs in results.items()}
    print(summary(medians, frame_counts))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results_file = args.output_dir / "training-memory.json"
    results_file.write_text(json.dumps({"runs": results, "median_bytes": medians}, indent=2) + "\n")
    plot(medians, frame_counts, results_file.with_suffix(".png"))


def summary(medians: dict, frame_counts: list[int]) -> str:
    """The table of median peaks by mode and, from the first frame count to the last, the memory per extra frame."""
    lines = ["", f"| frames | {' | '.join(f'{mode} (MB)' for mode in MODES)} |", f"|---|{'---|' * len(MODES)}"]
    for num_frames in frame_counts:
        lines.append(f"| {num_frames} | {' | '.join(f'{medians[mode][num_frames] / 2**20:.0f}' for mode in MODES)} |")
    first, last = frame_counts[0], frame_counts[-1]
    if first == last:
        return "\n".join([*lines, "", "One frame count: give two or more for the memory per extra frame."])
    frame_kb = FRAME_BYTES / 1024
    lines += ["", f"Per extra frame ({first} -> {last} frames); a 384 px frame is {frame_kb:.0f} KB in uint8:"]
    for mode in MODES:
        slope = (medians[mode][last] - medians[mode][first]) / (last - first)
        lines.append(f"- {mode}: {slope / 1024:.0f} KB ({slope / FRAME_BYTES:.2f}x the frame)")
    return "\n".join(lines)


def plot(medians: dict, frame_counts: list[int], path: Path) -> None:
    """Peak memory against frames, one line per mode, with the frames' own uint8 size for scale."""
    pyplot = headless_pyplot()

    figure, axes = pyplot.subplots(figsize=(6.4, 4))
    for mode in MODES:
        axes.plot(frame_counts, [medians[mode][n] / 2**30 for n in frame_counts], marker="o", label=LABELS[mode])
    axes.plot(frame_counts, [n * FRAME_BYTES / 2**30 for n in frame_counts], "k--", label="the frames (uint8)")
    axes.set_xlabel("frames (384 px)")
    axes.set_ylabel("peak memory of a training step (GB)")
    axes.set_title("One training step, tiny ViLAMP on CPU (median peak RSS)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
