"""
`python -m benchmarks.gpu_check [--device cuda|cpu] [--size 7b|tiny] [--frames 1000,5000,10000] [--output PATH]`

The one command to run on a GPU machine (one H100 or H200) to check the released-size model, designed to finish in
under 8 minutes on one H100. It

1. writes one synthetic H.264 video of the largest frame count (`benchmarks/.cache`, reused when there) and runs the
   `vilamp` method of `benchmarks.measure` on it once per frame count, each in a fresh process, the smaller counts
   thinned uniformly from the same video (`--max-frames`): time, peak GPU memory and peak host RSS per stage, and
   SigLIP TFLOP/s in the vision stage as a share of the card's dense bf16 peak;
2. asks three questions about that video at the largest count as `vilamp ask VIDEO Q1 Q2 Q3` asks them, in this
   process: the video prepared once (decoding and CLIP scoring), the tower's work kept in a `VilampVideoCache`
   (32 GiB) for the follow-ups; the first question's seconds (preparing included) and each follow-up's;
3. runs the same inputs through the tiny model (random weights, fixed seed) in fp32 and in bf16 on the device and
   compares the logits;
4. prints one table and writes everything as JSON to `benchmarks/results/gpu-check-<device>.json`, with a picture
   beside it (`.png`: seconds per stage and peak memory per frame count).

`--device cpu --size tiny --frames 20,40` is a smoke test of the command itself on a machine without a GPU;
`--replot JSON` redraws the picture of a saved run.
"""

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vilamp.cli import ask, prepare_video
from vilamp.modeling_vilamp import VilampVideoCache
from vilamp.processing import num_visual_tokens
from vilamp.tiny import tiny_model_and_processor

from .many_questions import QUESTIONS
from .measure import NEW_TOKENS, build_with_processor
from .plotting import headless_pyplot
from .run import STAGES, default_memory_limit_gb, run_once
from .synthetic_video import cached_video


# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s; the first entry whose words all occur in
# `torch.cuda.get_device_name()` wins, so variants come before the plain name. The H100 SXM calls itself
# "NVIDIA H100 80GB HBM3"; the H200 NVL has a lower peak that is not listed here, so it is marked unknown.
DENSE_BF16_PEAK_TFLOPS: tuple[tuple[tuple[str, ...], float | None], ...] = (
    (("H100", "NVL"), 835.0),
    (("H100", "PCIe"), 756.0),
    (("H100",), 989.4),
    (("H200", "NVL"), None),
    (("H200",), 989.4),
    (("A100",), 312.0),
)
PRECISION_FRAMES = 6
PRECISION_KEYFRAMES = (0, 3)
PRECISION_SEED = 0
# What a run on one H100 is designed to stay under, video writing included; the summary says when it did not.
TIME_BUDGET_SECONDS = 8 * 60
# The video cache's budget for the questions: the 7B model's tower outputs take 1.68 MB a frame in bf16
# (docs/usage.md), 16.8 GB at 10,000 frames, beyond the cache's 8 GiB default.
QUESTIONS_CACHE_BYTES = 32 * 2**30


def progress(message: str) -> None:
    """A progress line on stderr, so that stdout holds only the table."""
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def device_name(device: str) -> str:
    """The card's name on cuda, else the host processor's."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()})"


def slug(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `nvidia-h100-80gb-hbm3`, for a file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def dense_bf16_peak_tflops(name: str) -> float | None:
    """The card's dense bf16 peak in TFLOP/s from `DENSE_BF16_PEAK_TFLOPS`, or None when it is not known."""
    for words, peak in DENSE_BF16_PEAK_TFLOPS:
        if all(word.lower() in name.lower() for word in words):
            return peak
    return None


def measure_frame_counts(
    frame_counts: list[int], size: str, device: str, cache_dir: Path, peak: float | None
) -> list[dict]:
    """
    One `benchmarks.measure` run of the `vilamp` method per frame count, each in a fresh process so that its peaks
    are its own, all on one video of the largest count: writing a 10,000-frame video once takes long enough.
    """
    largest = max(frame_counts)
    progress(f"synthetic video of {largest:,} sampled frames (made once, thinned for the smaller counts)")
    video = cached_video(cache_dir, largest)
    records = []
    for number, num_frames in enumerate(frame_counts, 1):
        progress(f"run {number}/{len(frame_counts)}: vilamp on {num_frames:,} frames ({size}, {device})")
        start = time.perf_counter()
        try:
            record = run_once("vilamp", video, size, device, default_memory_limit_gb(), max_frames=num_frames)
        except RuntimeError as error:
            # A crash of one run must not cost the other runs' numbers on a lent GPU.
            record = {"method": "vilamp", "failed": str(error)[-3000:]}
        record.update(requested_frames=num_frames, source_video_frames=largest)
        if peak is not None and "vision_tflops_per_second" in record:
            record["vision_percent_of_peak"] = 100 * record["vision_tflops_per_second"] / peak
        records.append(record)
        progress(f"run {number}/{len(frame_counts)} took {time.perf_counter() - start:.0f} s")
    return records


def ask_in_turn(video: Path, num_frames: int, size: str, device: str, questions: int = 3) -> dict:
    """
    `questions` questions about `video` thinned to `num_frames` frames, asked in turn as `vilamp ask` asks several:
    the video is prepared once and the first question fills the video cache that the follow-ups read. Seconds of
    preparing the video and of each question, the frames each question ran through the tower, and the device's
    peak memory.
    """
    model, processor = build_with_processor(size, torch.device(device))
    cache = VilampVideoCache(max_bytes=QUESTIONS_CACHE_BYTES)
    through_tower = [0]  # while preparing (on an accelerator the tower runs then), then each question

    def count_frames(_module, args) -> None:  # returns None: the tower's inputs stay as they are
        through_tower[-1] += args[0].shape[0]

    count = model.get_submodule("model.vision_tower").register_forward_pre_hook(count_frames)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    # As `vilamp ask` prepares it: on an accelerator, the tower runs on the frames while the rest decode.
    prepared = prepare_video(processor, str(video), num_frames, False, False, model, cache)
    prepare_seconds = time.perf_counter() - start
    seconds, visual_tokens = [], 0
    for question in QUESTIONS[:questions]:
        through_tower.append(0)
        start = time.perf_counter()
        _, inputs = ask(model, processor, prepared, question, None, NEW_TOKENS, cache, show_progress=False)
        seconds.append(time.perf_counter() - start)  # the answer's text is on the host: the device is done
        visual_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
    count.remove()
    record = {
        "frames": int(inputs["video_frame_counts"][0]),
        "visual_tokens": visual_tokens,
        "new_tokens": NEW_TOKENS,
        "prepare_seconds": prepare_seconds,
        "question_seconds": seconds,
        "first_question_seconds": prepare_seconds + seconds[0],
        "follow_up_seconds": seconds[1:],
        "frames_through_tower_preparing": through_tower[0],
        "frames_through_tower": through_tower[1:],
        "cache_bytes": cache.nbytes,
    }
    if device == "cuda":
        record["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    return record


def questions_summary(record: dict) -> str:
    """One line on the questions asked in turn (or why they failed)."""
    if "failed" in record:
        return f"questions in turn: failed: {record['failed'].strip().splitlines()[-1]}"
    follow_ups = ", ".join(f"{seconds:.2f}" for seconds in record["follow_up_seconds"])
    return (
        f"questions in turn, {record['frames']:,} frames ({record['visual_tokens']:,} visual tokens, "
        f"{record['new_tokens']} new tokens each): first {record['first_question_seconds']:.2f} s "
        f"(preparing the video {record['prepare_seconds']:.2f} s, then {record['question_seconds'][0]:.2f} s), "
        f"follow-ups {follow_ups} s; frames through the tower while preparing "
        f"{record['frames_through_tower_preparing']}, then {record['frames_through_tower']}, video cache "
        f"{record['cache_bytes'] / 1e9:.3g} GB"
    )


def compare_precisions(device: torch.device) -> dict:
    """
    The tiny model's logits in fp32 and in bf16 (the same weights, rounded) for the same inputs: a few random uint8
    frames, two of them keyframes, and a chat prompt with the video's placeholder tokens in place.
    """
    model, processor = tiny_model_and_processor(seed=PRECISION_SEED)
    generator = torch.Generator().manual_seed(PRECISION_SEED)
    size = model.config.vision_config.image_size
    frames = torch.randint(0, 256, (PRECISION_FRAMES, 3, size, size), dtype=torch.uint8, generator=generator)
    keyframe_mask = torch.zeros(PRECISION_FRAMES, dtype=torch.bool)
    keyframe_mask[list(PRECISION_KEYFRAMES)] = True
    num_visual = num_visual_tokens(PRECISION_FRAMES, len(PRECISION_KEYFRAMES), model.model.tokens_per_keyframe)
    tokenizer = processor.tokenizer
    prompt = (
        tokenizer("<|im_start|>user\n").input_ids
        + [model.config.video_token_id] * num_visual
        + tokenizer("\nWhat happens in this video?<|im_end|>\n<|im_start|>assistant\n").input_ids
    )
    inputs = {
        "input_ids": torch.tensor([prompt], device=device),
        "pixel_values_videos": frames,
        "keyframe_mask": keyframe_mask,
        "query_embeds": torch.randn(1, model.config.query_embed_dim, generator=generator),
    }
    with torch.no_grad():
        fp32 = model.to(device)(**inputs).logits.float()
        bf16 = model.to(torch.bfloat16)(**inputs).logits.float()
    fp32_token, bf16_token = int(fp32[0, -1].argmax()), int(bf16[0, -1].argmax())
    return {
        "model": f"vilamp.tiny.tiny_model_and_processor(seed={PRECISION_SEED})",
        "frames": PRECISION_FRAMES,
        "keyframes": len(PRECISION_KEYFRAMES),
        "sequence_length": len(prompt),
        "max_abs_diff": float((bf16 - fp32).abs().max()),
        "max_abs_fp32": float(fp32.abs().max()),
        "last_argmax_fp32": fp32_token,
        "last_argmax_bf16": bf16_token,
        "last_argmax_agrees": fp32_token == bf16_token,
    }


def vision_note(record: dict, name: str, peak: float | None) -> str:
    """SigLIP throughput of a run, and its share of the card's dense bf16 peak when that is known."""
    tflops = record["vision_tflops_per_second"]
    if peak is None:
        return f"SigLIP {tflops:.4g} TFLOP/s; dense bf16 peak of {name} unknown"
    return f"SigLIP {tflops:.4g} TFLOP/s = {record['vision_percent_of_peak']:.1f}% of the {peak:g} bf16 peak"


def table(records: list[dict], name: str, peak: float | None) -> str:
    """Plain text: one row per stage of each run (or why the run failed)."""
    header = f"{'frames':>7} {'tokens':>7}  {'stage':<20} {'seconds':>9} {'GPU peak GB':>11} {'RSS GB':>7}  note"
    lines = [header, "-" * len(header)]
    for record in records:
        if "failed" in record:
            reason = record["failed"].strip().splitlines()[-1]
            lines.append(f"{record['requested_frames']:>7,} {'-':>7}  failed: {reason}")
            continue
        frames = f"{record['frames']:>7,}"
        tokens = f"{record['visual_tokens']:>7,}"
        for stage in STAGES:
            seconds = record["seconds"].get(stage)
            gpu = record.get("gpu_peak_bytes", {}).get(stage)
            rss = record["rss_peak_bytes"].get(stage)
            note = ""
            if stage == "vision":
                note = vision_note(record, name, peak)
            elif stage == "decode_per_token" and seconds is not None:
                note = f"median of {NEW_TOKENS} greedy tokens"
            elif stage == "prefill" and seconds is None:
                note = record.get("prefill_skipped", "")
            lines.append(
                f"{frames} {tokens}  {stage:<20} {'-' if seconds is None else f'{seconds:.3f}':>9} "
                f"{'-' if gpu is None else f'{gpu / 1e9:.2f}':>11} {'-' if rss is None else f'{rss / 1e9:.2f}':>7}"
                f"  {note}".rstrip()
            )
            frames, tokens = " " * 7, " " * 7
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """
    Two panels over the runs that finished: seconds per stage stacked (greedy decoding left out),
    and peak GPU memory (on a GPU) and peak host RSS, with the model's weights marked.
    """
    plt = headless_pyplot()

    runs = [run for run in report["runs"] if "failed" not in run]
    labels = [f"{run['frames']:,}" for run in runs]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    bottom = np.zeros(len(runs))
    for stage in [stage for stage in STAGES if stage != "decode_per_token"]:  # seconds per token, not per run
        seconds = np.array([run["seconds"].get(stage) or 0.0 for run in runs])
        time_axis.bar(labels, seconds, bottom=bottom, label=stage)
        bottom += seconds
    time_axis.set(title="seconds per stage", xlabel="sampled frames", ylabel="s")
    time_axis.legend(fontsize=8)
    memories = {"host RSS": [max(run["rss_peak_bytes"].values()) / 1e9 for run in runs]}
    if all("gpu_peak_bytes" in run for run in runs):
        memories = {"GPU": [max(run["gpu_peak_bytes"].values()) / 1e9 for run in runs], **memories}
    positions, width = np.arange(len(runs)), 0.8 / len(memories)
    for number, (name, values) in enumerate(memories.items()):
        memory_axis.bar(positions + (number - (len(memories) - 1) / 2) * width, values, width, label=name)
    if runs:
        memory_axis.axhline(runs[0]["model_bytes"] / 1e9, color="black", linestyle=":", label="model weights")
    memory_axis.set_xticks(positions, labels)
    memory_axis.set_ylim(top=1.3 * max((value for values in memories.values() for value in values), default=1.0))
    memory_axis.set(title="peak memory", xlabel="sampled frames", ylabel="GB")
    memory_axis.legend(fontsize=8)
    settings = report["settings"]
    figure.suptitle(f"ViLAMP {settings['size']} on {report['device']}, torch {report['torch']}", fontsize=10)
    figure.savefig(path)
    plt.close(figure)


def precision_summary(precision: dict, device: str) -> str:
    """One line on the bf16-vs-fp32 comparison (or why it failed)."""
    if "failed" in precision:
        return f"bf16 vs fp32 logits (tiny model, {device}): failed: {precision['failed']}"
    agreement = "agrees" if precision["last_argmax_agrees"] else "DISAGREES"
    return (
        f"bf16 vs fp32 logits (tiny model, seed {PRECISION_SEED}, {device}): max |diff| "
        f"{precision['max_abs_diff']:.4g}, max |fp32| {precision['max_abs_fp32']:.4g}, last-position argmax "
        f"{agreement} ({precision['last_argmax_fp32']} fp32, {precision['last_argmax_bf16']} bf16)"
    )


def parse_frame_counts(text: str, parser: argparse.ArgumentParser) -> list[int]:
    """`--frames` as sorted distinct positive integers."""
    try:
        counts = sorted({int(part) for part in text.split(",")})
    except ValueError:
        parser.error(f"--frames must be comma-separated integers, got {text!r}")
    if counts[0] < 1:
        parser.error(f"--frames must be positive, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    """Runs the check and exits non-zero when a run or the precision comparison failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--frames", default="1000,5000,10000", help="comma-separated sampled frame counts")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("benchmarks/.cache"), help="where the synthetic video is kept"
    )
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/gpu-check-<device>.json)")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the picture of a saved run")
    args = parser.parse_args(argv)
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        print(f"wrote {args.replot.with_suffix('.png')}")
        return
    frame_counts = parse_frame_counts(args.frames, parser)
    if args.size == "7b" and args.device == "cpu":
        parser.error("the 7b size is for --device cuda; on a CPU use --size tiny")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            f"gpu_check: --device cuda was asked but torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}). Run it on a GPU machine, or smoke-test with "
            "--device cpu --size tiny --frames 20,40."
        )
    start = time.perf_counter()
    name = device_name(args.device)
    peak = dense_bf16_peak_tflops(name) if args.device == "cuda" else None
    progress(f"{name}, torch {torch.__version__}; dense bf16 peak: {f'{peak:g} TFLOP/s' if peak else 'unknown'}")

    records = measure_frame_counts(frame_counts, args.size, args.device, args.cache_dir, peak)
    largest = frame_counts[-1]
    progress(f"three questions in turn about the {largest:,}-frame video ({args.size}, {args.device})")
    try:
        questions = ask_in_turn(cached_video(args.cache_dir, largest), largest, args.size, args.device)
    except (RuntimeError, OSError, ValueError) as error:  # out of memory included; the precision check still runs
        questions = {"failed": str(error)[-3000:]}
    if args.device == "cuda":
        torch.cuda.empty_cache()  # the 7B model and its cache are gone; the tiny model's check needs little
    progress("bf16 vs fp32 logits of the tiny model")
    try:
        precision = compare_precisions(torch.device(args.device))
    except RuntimeError as error:
        precision = {"failed": str(error).strip().splitlines()[0][:500]}
    wall_seconds = time.perf_counter() - start

    output = args.output or Path("benchmarks/results") / f"gpu-check-{slug(name)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if args.device == "cuda" else None,
        "dense_bf16_peak_tflops": peak,
        "settings": {"device": args.device, "size": args.size, "frames": frame_counts, "method": "vilamp"},
        "wall_seconds": wall_seconds,
        "runs": records,
        "questions_in_turn": questions,
        "bf16_vs_fp32": precision,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, output.with_suffix(".png"))
    print(table(records, name, peak))
    print(questions_summary(questions))
    print(precision_summary(precision, args.device))
    over = ""
    if args.device == "cuda" and wall_seconds > TIME_BUDGET_SECONDS:
        over = f" (over the {TIME_BUDGET_SECONDS // 60} minutes it is designed for)"
    print(f"{name}, torch {torch.__version__}, {wall_seconds:.0f} s in all{over}; wrote {output} and its .png")
    failed = [f"{r['requested_frames']:,} frames" for r in records if "failed" in r]
    failed += ["questions in turn"] if "failed" in questions else []
    failed += ["bf16 vs fp32"] if "failed" in precision else []
    if failed:
        sys.exit(f"gpu_check: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
