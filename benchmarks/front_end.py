"""
`python -m benchmarks.front_end [--frames 300,1000,3000] [--sizes 640x360,1280x720] [--repeats 3]
[--released-repo PATH --released-python PY]`

The released ViLAMP front end against this project's, side by side on the same videos (real footage repeated,
25 fps, N seconds so that 1 fps sampling keeps about N frames). The released side is the released code itself
(`benchmarks/front_end_released.py`: the evaluation script's decoding, LLaVA's SigLIP preprocessing, the released
CLIP frame selector) run by `--released-python` from the checkout `--released-repo`, in its own environment
(docs/performance.md says how to build it); without them only this project's side and the CLIP floor run. Both use
CLIP ViT-B/32 at random weights. Each run is a process of its own; within a repeat the sides run one after the other,
in an order that turns with every repeat, so that a slow spell of the machine does not fall on one side only. CLIP's
forward pass alone over the same frames (`scorer`, in this project's process) is the floor, measured once per video
(`--scorer-repeats`).

Writes `benchmarks/results/front-end.json` (every run; new results are merged into what is there) and
`front-end.png`, and prints the medians and ratios. `--replot` redraws both from the saved JSON.
"""

import argparse
import json
import platform
import subprocess
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .looped_footage import cached_looped_video
from .plotting import headless_pyplot
from .run import default_memory_limit_gb, median_of, run_json_module


SIDES = ("released", "project")


def run_side(side: str, video: Path, memory_limit_gb: float, released: tuple[Path, Path] | None) -> dict:
    """One run of `side` in a fresh process; its record. `released`: the checkout and its environment's Python."""
    arguments = ["--video", str(video), "--memory-limit-gb", str(memory_limit_gb)]
    if side != "released":
        return run_json_module("benchmarks.front_end_run", ["--side", side, *arguments], f"{side} on {video.name}")
    repo, python = released
    command = [str(python), str(Path(__file__).with_name("front_end_released.py")), "--repo", str(repo), *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the released side on {video.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def summarize(point: dict) -> dict:
    """Medians of every side's figures at one (size, frames) point, and the ratios the goals are stated in."""
    summary = {"size": point["size"], "frames": None}
    for side, records in point["runs"].items():
        done = [record for record in records if "failed" not in record]
        if not done:
            # What the run held when its allocation failed: a floor under what it would have needed.
            rss_at_failure = median_of(records, "rss_peak_bytes_overall")
            summary[side] = {"failed": records[0]["failed"], "repeats": len(records), "rss_at_failure": rss_at_failure}
            continue
        summary["frames"] = done[0]["frames"]
        summary[side] = {
            "repeats": len(done),
            "seconds": {stage: median_of(done, "seconds", stage) for stage in done[0]["seconds"]},
            "total_seconds": median_of(done, "total_seconds"),
            "rss_peak_bytes": median_of(done, "rss_peak_bytes_overall"),
        }
        if "split_seconds" in done[0]:
            parts = done[0]["split_seconds"]
            summary[side]["split_seconds"] = {part: median_of(done, "split_seconds", part) for part in parts}
    released, project, scorer = (summary.get(side, {}) for side in ("released", "project", "scorer"))
    ratios = {}
    if "total_seconds" in released and "total_seconds" in project:
        ratios["speedup_over_released"] = released["total_seconds"] / project["total_seconds"]
        ratios["rss_of_released"] = project["rss_peak_bytes"] / released["rss_peak_bytes"]
        # The released front end's own CLIP forward passes: what no front end with that scorer goes below.
        ratios["front_end_over_released_clip"] = project["total_seconds"] / released["seconds"]["score"]
    if "seconds" in scorer and "seconds" in project:
        ratios["front_end_over_scorer"] = project["seconds"]["front_end"] / scorer["seconds"]["score"]
        ratios["front_end_over_scorer_in_threads"] = (
            project["seconds"]["front_end"] / scorer["seconds"]["score_in_threads"]
        )
    summary["ratios"] = ratios
    return summary


def in_order(summaries: list[dict]) -> list[dict]:
    """The points by frame size (pixels), then by sampled frames."""

    def pixels(size: str) -> int:
        width, height = (int(side) for side in size.split("x"))
        return width * height

    return sorted(summaries, key=lambda s: (pixels(s["size"]), s["frames"] or 0))


def table(summaries: list[dict]) -> str:
    header = (
        f"{'size':>9} {'frames':>6} {'released s':>10} {'project s':>9} {'scorer s':>8} {'speedup':>7} "
        f"{'front/rel CLIP':>14} {'front/scorer':>12} {'rel RSS GB':>10} {'proj RSS GB':>11} {'RSS ratio':>9}"
    )
    lines = [header, "-" * len(header)]
    for s in in_order(summaries):
        released, project, scorer = (s.get(side, {}) for side in ("released", "project", "scorer"))
        ratios = s["ratios"]

        def value(figure, scale=1.0, digits=1):
            return f"{figure / scale:.{digits}f}" if figure is not None else "-"

        released_seconds = value(released.get("total_seconds"))
        released_rss = value(released.get("rss_peak_bytes"), 1e9, 2)
        if "failed" in released:
            released_seconds, released_rss = "OOM", ">" + value(released["rss_at_failure"], 1e9, 2)
        lines.append(
            f"{s['size']:>9} {s['frames'] or 0:>6} {released_seconds:>10} "
            f"{value(project.get('total_seconds')):>9} {value(scorer.get('seconds', {}).get('score')):>8} "
            f"{value(ratios.get('speedup_over_released'), digits=2):>7} "
            f"{value(ratios.get('front_end_over_released_clip'), digits=2):>14} "
            f"{value(ratios.get('front_end_over_scorer'), digits=2):>12} "
            f"{released_rss:>10} {value(project.get('rss_peak_bytes'), 1e9, 2):>11} "
            f"{value(ratios.get('rss_of_released'), digits=2):>9}"
        )
    return "\n".join(lines)


def plot(summaries: list[dict], path: Path, title: str) -> None:
    """Time per stage (stacked bars) and peak memory, each size and frame count side by side."""
    plt = headless_pyplot()

    points = in_order(summaries)
    labels = [f"{s['size']}\n{s['frames']} frames" for s in points]
    stage_colours = {
        "decode": "#4c72b0",
        "siglip_preprocess": "#55a868",
        "clip_preprocess": "#8fd18f",
        "score": "#dd8452",
        "select": "#937860",
        "front_end": "#c44e52",
    }
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    width = 0.27
    for offset, side in zip((-width, 0.0, width), ("released", "project", "scorer"), strict=True):
        for index, point in enumerate(points):
            if "failed" in point.get(side, {}):
                time_axis.annotate(
                    f"{side[0]}: out of memory", (index + offset, 0), ha="center", va="bottom", rotation=90, fontsize=7
                )
                continue
            seconds = point.get(side, {}).get("seconds")
            if not seconds:
                continue
            bottom = 0.0
            for stage, value in seconds.items():
                if side == "scorer" and stage != "score":
                    continue
                colour = stage_colours.get(stage, "#999999")
                time_axis.bar(index + offset, value, width, bottom=bottom, color=colour, edgecolor="white")
                bottom += value
            time_axis.annotate(side[0], (index + offset, bottom), ha="center", va="bottom", fontsize=7)
    time_axis.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in stage_colours.values()],
        labels=[name.replace("_", " ") for name in stage_colours],
        fontsize=7,
    )
    time_axis.set_title("seconds per stage (r: released code, p: project, s: CLIP forward alone)", fontsize=9)
    side_colours = dict(zip(SIDES, ("#1f77b4", "#ff7f0e"), strict=True))
    for offset, (side, colour) in zip((-width / 2, width / 2), side_colours.items(), strict=True):
        for index, point in enumerate(points):
            figures = point.get(side, {})
            failed = "failed" in figures
            gigabytes = figures.get("rss_at_failure" if failed else "rss_peak_bytes", 0) / 1e9
            memory_axis.bar(
                index + offset, gigabytes, width, color=colour, hatch="//" if failed else None, edgecolor="white"
            )
            if failed:
                memory_axis.annotate("OOM", (index + offset, gigabytes), ha="center", va="bottom", fontsize=7)
    memory_axis.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in side_colours.values()], labels=list(SIDES), fontsize=8
    )
    memory_axis.set_title("peak resident memory (GB); hatched: held when it ran out of memory", fontsize=9)
    for axis in (time_axis, memory_axis):
        axis.set_xticks(range(len(points)), labels, fontsize=7)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="300,1000,3000", help="sampled frames per video, comma-separated")
    parser.add_argument("--sizes", default="640x360,1280x720", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scorer-repeats", type=int, default=1)
    parser.add_argument("--memory-limit-gb", type=float, default=default_memory_limit_gb())
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmarks/.cache"))
    parser.add_argument("--replot", action="store_true", help="redraw the table and picture from the saved JSON")
    parser.add_argument("--released-repo", type=Path, help="a checkout of github.com/steven-ccq/ViLAMP")
    parser.add_argument("--released-python", type=Path, help="the Python of its environment (transformers 4.45)")
    args = parser.parse_args()
    if (args.released_repo is None) != (args.released_python is None):
        parser.error("--released-repo and --released-python go together")
    released = None if args.released_repo is None else (args.released_repo, args.released_python)
    sides = SIDES if released else ("project",)
    if not released:
        print("no --released-repo/--released-python: measuring this project's side and CLIP's forward only")
    results_path = args.output_dir / "front-end.json"
    saved = json.loads(results_path.read_text()) if results_path.is_file() else {"points": {}}
    if not args.replot:
        saved["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        saved["torch"] = torch.__version__
        points = [(size, int(n)) for size in args.sizes.split(",") for n in args.frames.split(",")]
        for size, num_frames in tqdm(points, desc="points", unit="point"):
            width, height = (int(side) for side in size.split("x"))
            video = cached_looped_video(args.cache_dir, num_frames, width, height)
            runs: dict[str, list[dict]] = {side: [] for side in (*sides, "scorer")}
            for repeat in tqdm(range(args.repeats), desc=f"{size}, {num_frames} frames", unit="repeat", leave=False):
                order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
                if repeat < args.scorer_repeats:
                    order.insert(repeat % (len(order) + 1), "scorer")
                for side in order:
                    runs[side].append(run_side(side, video, args.memory_limit_gb, released))
            saved["points"][f"{size}/{num_frames}"] = {"size": size, "runs": runs}
            args.output_dir.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(saved, indent=1) + "\n")
    summaries = [summarize(point) for point in saved["points"].values()]
    print(table(summaries))
    title = f"Front end, the released code vs this project, CLIP ViT-B/32 scorer; {saved['machine']}; medians"
    plot(summaries, args.output_dir / "front-end.png", title)


if __name__ == "__main__":
    main()
