"""
`python -m benchmarks.front_end [--frames 300,1000,3000] [--sizes 640x360,1280x720] [--repeats 3]`

The released evaluation front end against this project's, side by side on the same videos (real footage repeated,
25 fps, N seconds so that 1 fps sampling keeps about N frames), with the same CLIP ViT-B/32 scorer. Each run is a
process of its own (`benchmarks.front_end_run`); within a repeat the sides run one after the other, in an order that
turns with every repeat, so that a slow spell of the machine does not fall on one side only. CLIP's forward pass
alone over the same frames (`scorer`) is the floor, measured once per video (`--scorer-repeats`).

Writes `benchmarks/results/front-end.json` (every run; new results are merged into what is there) and
`front-end.png`, and prints the medians and ratios. `--replot` redraws both from the saved JSON.
"""

import argparse
import json
import platform
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .looped_footage import cached_looped_video
from .plotting import headless_pyplot
from .run import default_memory_limit_gb, median_of, run_json_module


SIDES = ("original", "project")


def run_side(side: str, video: Path, memory_limit_gb: float) -> dict:
    """One `benchmarks.front_end_run` run in a fresh process; its record."""
    arguments = ["--side", side, "--video", str(video), "--memory-limit-gb", str(memory_limit_gb)]
    return run_json_module("benchmarks.front_end_run", arguments, f"{side} on {video.name}")


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
    original, project, scorer = (summary.get(side, {}) for side in ("original", "project", "scorer"))
    ratios = {}
    if "total_seconds" in original and "total_seconds" in project:
        ratios["speedup_over_original"] = original["total_seconds"] / project["total_seconds"]
        ratios["rss_of_original"] = project["rss_peak_bytes"] / original["rss_peak_bytes"]
    if "seconds" in scorer and "seconds" in project:
        ratios["front_end_over_scorer"] = project["seconds"]["front_end"] / scorer["seconds"]["score"]
        ratios["front_end_over_scorer_in_threads"] = (
            project["seconds"]["front_end"] / scorer["seconds"]["score_in_threads"]
        )
    keyframes = {tuple(r["keyframes"]) for records in point["runs"].values() for r in records if "keyframes" in r}
    summary["same_keyframes"] = len(keyframes) == 1 if keyframes else None
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
        f"{'size':>9} {'frames':>6} {'original s':>10} {'project s':>9} {'scorer s':>8} {'speedup':>7} "
        f"{'front/scorer':>12} {'orig RSS GB':>11} {'proj RSS GB':>11} {'RSS ratio':>9} {'same keys':>9}"
    )
    lines = [header, "-" * len(header)]
    for s in in_order(summaries):
        original, project, scorer = (s.get(side, {}) for side in ("original", "project", "scorer"))
        ratios = s["ratios"]

        def value(figure, scale=1.0, digits=1):
            return f"{figure / scale:.{digits}f}" if figure is not None else "-"

        original_seconds = value(original.get("total_seconds"))
        original_rss = value(original.get("rss_peak_bytes"), 1e9, 2)
        if "failed" in original:
            original_seconds, original_rss = "OOM", ">" + value(original["rss_at_failure"], 1e9, 2)
        lines.append(
            f"{s['size']:>9} {s['frames'] or 0:>6} {original_seconds:>10} "
            f"{value(project.get('total_seconds')):>9} {value(scorer.get('seconds', {}).get('score')):>8} "
            f"{value(ratios.get('speedup_over_original'), digits=2):>7} "
            f"{value(ratios.get('front_end_over_scorer'), digits=2):>12} "
            f"{original_rss:>11} {value(project.get('rss_peak_bytes'), 1e9, 2):>11} "
            f"{value(ratios.get('rss_of_original'), digits=2):>9} {str(s['same_keyframes']):>9}"
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
    for offset, side in zip((-width, 0.0, width), ("original", "project", "scorer"), strict=True):
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
    time_axis.set_title("seconds per stage (o: original, p: project, s: CLIP forward alone)", fontsize=9)
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
    args = parser.parse_args()
    results_path = args.output_dir / "front-end.json"
    saved = json.loads(results_path.read_text()) if results_path.is_file() else {"points": {}}
    if not args.replot:
        saved["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        saved["torch"] = torch.__version__
        points = [(size, int(n)) for size in args.sizes.split(",") for n in args.frames.split(",")]
        for size, num_frames in tqdm(points, desc="points", unit="point"):
            width, height = (int(side) for side in size.split("x"))
            video = cached_looped_video(args.cache_dir, num_frames, width, height)
            runs: dict[str, list[dict]] = {side: [] for side in (*SIDES, "scorer")}
            for repeat in tqdm(range(args.repeats), desc=f"{size}, {num_frames} frames", unit="repeat", leave=False):
                order = list(SIDES) if repeat % 2 == 0 else list(reversed(SIDES))
                if repeat < args.scorer_repeats:
                    order.insert(repeat % 3, "scorer")
                for side in order:
                    runs[side].append(run_side(side, video, args.memory_limit_gb))
            saved["points"][f"{size}/{num_frames}"] = {"size": size, "runs": runs}
            args.output_dir.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(saved, indent=1) + "\n")
    summaries = [summarize(point) for point in saved["points"].values()]
    print(table(summaries))
    title = f"Front end, original vs this project, CLIP ViT-B/32 scorer; {saved['machine']}; medians"
    plot(summaries, args.output_dir / "front-end.png", title)


if __name__ == "__main__":
    main()
