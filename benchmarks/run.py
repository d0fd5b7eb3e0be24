"""
`python -m benchmarks.run [--device cpu|cuda] [--frames 1000,2500,5000,10000] [--size tiny|tiny-b32|7b] [--repeats 3]`

Makes a synthetic H.264 video per frame count (640x360, 2 fps, so 1 fps sampling keeps N frames), runs every
method on it `--repeats` times, each run in a fresh process (`benchmarks.measure`), and writes the medians as JSON,
a PNG (time and memory against frames, one line per method) and a table on stdout.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .measure import METHODS, SIZES
from .plotting import headless_pyplot
from .synthetic_video import cached_video


STAGES = ("decode_resize_score", "select", "vision", "prefill", "decode_per_token")


def default_memory_limit_gb() -> float:
    """75% of physical memory, in GB: the per-run address-space cap on CPU unless one is given."""
    return round(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)


def run_json_module(module: str, arguments: list[str], what: str, env: dict[str, str] | None = None) -> dict | int:
    """
    Runs `python -m <module> <arguments>` in a fresh process, with `env` added to its environment, and returns the
    JSON it prints.
    """
    environment = None if env is None else {**os.environ, **env}
    command = [sys.executable, "-m", module, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def run_once(
    method: str, video: Path, size: str, device: str, memory_limit_gb: float, max_frames: int | None = None
) -> dict:
    """One `benchmarks.measure` run in a fresh process; its record (`max_frames` thins the sampled frames)."""
    arguments = ["--method", method, "--video", str(video), "--size", size, "--device", device]
    arguments += ["--memory-limit-gb", str(memory_limit_gb)]
    if max_frames is not None:
        arguments += ["--max-frames", str(max_frames)]
    return run_json_module("benchmarks.measure", arguments, f"{method} on {video.name}")


def median_of(records: list[dict], *path: str) -> float | None:
    values = []
    for record in records:
        value = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def summarize(records: list[dict], num_frames: int) -> dict:
    """Medians over the repeats of every stage time and memory figure (or why the method could not run)."""
    failures = [record["failed"] for record in records if "failed" in record]
    if failures:
        return {"method": records[0]["method"], "frames": num_frames, "repeats": len(records), "failed": failures[0]}
    first = records[0]
    summary = {key: first[key] for key in ("method", "frames", "frames_bytes", "model_bytes", "visual_tokens")}
    summary["repeats"] = len(records)
    summary["seconds"] = {stage: median_of(records, "seconds", stage) for stage in STAGES}
    summary["split_seconds"] = {part: median_of(records, "split_seconds", part) for part in first["split_seconds"]}
    summary["rss_after_model_bytes"] = median_of(records, "rss_after_model_bytes")
    summary["rss_peak_bytes"] = median_of(records, "rss_peak_bytes_overall")
    summary["rss_peak_bytes_by_stage"] = {s: median_of(records, "rss_peak_bytes", s) for s in first["rss_peak_bytes"]}
    if "gpu_peak_bytes" in first:
        summary["gpu_peak_bytes"] = max(median_of(records, "gpu_peak_bytes", s) or 0 for s in first["gpu_peak_bytes"])
    summary["vision_tflops_per_second"] = median_of(records, "vision_tflops_per_second")
    summary["prefill_skipped"] = first.get("prefill_skipped")
    return summary


def plot(results: list[dict], path: Path, title: str) -> None:
    """Time, memory and visual tokens against frames, one line per method; runs that failed are marked."""
    plt = headless_pyplot()

    panels = {
        "front end + selection (s)": lambda r: r["seconds"]["decode_resize_score"] + r["seconds"]["select"],
        "vision encoding + merging (s)": lambda r: r["seconds"]["vision"],
        "peak host RSS (GB)": lambda r: r["rss_peak_bytes"] / 1e9,
        "visual tokens (log)": lambda r: r["visual_tokens"],
    }
    if any("gpu_peak_bytes" in r for r in results):
        panels["peak GPU memory (GB)"] = lambda r: r["gpu_peak_bytes"] / 1e9
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), layout="constrained")
    for method in METHODS:
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["frames"])
        done = [r for r in rows if "failed" not in r]
        failed = [r["frames"] for r in rows if "failed" in r]
        for axis, value in zip(axes, panels.values(), strict=True):
            line = axis.plot([r["frames"] for r in done], [value(r) for r in done], marker="o", label=method)[0]
            for frames in failed:
                axis.axvline(frames, color=line.get_color(), linestyle=":", alpha=0.6)
                axis.annotate(
                    "out of memory",
                    (frames, 0.02),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    fontsize=7,
                    color=line.get_color(),
                    ha="right",
                    va="bottom",
                )
    axes[list(panels).index("visual tokens (log)")].set_yscale("log")
    for axis, name in zip(axes, panels, strict=True):
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("sampled frames")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path)
    plt.close(figure)


def table(results: list[dict]) -> str:
    header = (
        f"{'method':18} {'frames':>7} {'tokens':>10} {'front s':>8} {'select s':>9} {'vision s':>9} "
        f"{'prefill s':>10} {'tok/s':>7} {'RSS GB':>7} {'frames GB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in sorted(results, key=lambda r: (r["frames"], METHODS.index(r["method"]))):
        if "failed" in r:
            lines.append(f"{r['method']:18} {r['frames']:>7} {r['failed']}")
            continue
        seconds = r["seconds"]
        prefill = f"{seconds['prefill']:.2f}" if seconds["prefill"] is not None else "beyond ctx"
        per_token = f"{1 / seconds['decode_per_token']:.1f}" if seconds["decode_per_token"] else "-"
        lines.append(
            f"{r['method']:18} {r['frames']:>7} {r['visual_tokens']:>10,} {seconds['decode_resize_score']:>8.2f} "
            f"{seconds['select']:>9.3f} {seconds['vision']:>9.2f} {prefill:>10} {per_token:>7} "
            f"{r['rss_peak_bytes'] / 1e9:>7.2f} {r['frames_bytes'] / 1e9:>9.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--frames", default="1000,2500,5000,10000", help="comma-separated sampled frame counts")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=default_memory_limit_gb(),
        help="per-run address-space cap on CPU (default: 75%% of physical memory)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmarks/.cache"))
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the PNG from a results JSON")
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads(args.replot.read_text())
        title = f"ViLAMP {saved['settings']['size']} on {saved['settings']['device']}, medians of "
        plot(saved["results"], args.replot.with_suffix(".png"), title + str(saved["settings"]["repeats"]))
        print(table(saved["results"]))
        return
    frame_counts = [int(n) for n in args.frames.split(",")]
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")

    runs = [(n, method) for n in frame_counts for method in methods]
    results = []
    with tqdm(total=len(runs) * args.repeats, desc="benchmark runs", unit="run") as bar:
        for num_frames, method in runs:
            video = cached_video(args.cache_dir, num_frames)
            records = []
            for _ in range(args.repeats):
                bar.set_postfix_str(f"{method} @ {num_frames}")
                records.append(run_once(method, video, args.size, args.device, args.memory_limit_gb))
                bar.update()
                if "failed" in records[-1]:
                    break  # out of memory is not a timing to repeat
            results.append(summarize(records, num_frames))

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{args.size}-{args.device}"
    output = {"settings": {**vars(args), "output_dir": str(args.output_dir), "cache_dir": str(args.cache_dir)}}
    output.update(machine=machine, results=results)
    (args.output_dir / f"{stem}.json").write_text(json.dumps(output, indent=2) + "\n")
    plot(results, args.output_dir / f"{stem}.png", f"ViLAMP {args.size} on {args.device}, medians of {args.repeats}")
    print(table(results))
    print(f"wrote {args.output_dir / (stem + '.json')} and {args.output_dir / (stem + '.png')}")


if __name__ == "__main__":
    main()
