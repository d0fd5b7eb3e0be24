"""
Video-NIAH: a needle clip spliced into a long haystack video, and a question only the needle answers.

    python -m vilamp.evaluation.video_niah build --haystacks a.mp4 b.mp4 --needles needles.json \\
        --lengths 2000 5000 10000 --depths 0 0.25 0.5 0.75 1 --seed 0 --output niah/
    python -m vilamp.evaluation.video_niah recall --cases niah/cases.jsonl --model DIR [--num-keyframes 32]
    python -m vilamp.evaluation.video_niah heatmap --samples SAMPLES.jsonl --output accuracy.png

`build` samples the haystacks at 1 fps, concatenates them (in a seeded order, repeating when short) to the asked
length in frames, and splices the needle's frames (its `start`-`end` seconds at 1 fps, resized to the haystack's
resolution) in at the asked depth; each case is re-encoded with PyAV at 1 fps. It writes the videos, `cases.jsonl`
(the ground truth: the needle's first and last-plus-one frame in each case) and the lmms-eval task `video_niah`
(`lmms-eval --include_path niah/ --tasks video_niah`). `recall` runs only the processor: the share of cases whose
keyframes keep at least one needle frame, and how many they keep. `heatmap` draws lmms-eval's accuracy by length
and depth.

The needle manifest is a JSON list of {"clip", "start", "end", "question", "options" ["A. text", ...], "answer"};
a relative `clip` is taken from the manifest's folder.
"""

import argparse
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..processing.video_decoding import PyAVFile
from ..processing.video_processing_vilamp import VilampVideoProcessor, source_metadata
from .lmms_eval_task import write_task


TASK_NAME = "video_niah"
NEEDLE_FIELDS = ("clip", "start", "end", "question", "options", "answer")
CHUNK = 64


def load_needles(manifest: str | Path) -> list[dict]:
    """The needles of a manifest, with `clip` made absolute; an error names the manifest and the needle at fault."""
    manifest = Path(manifest)
    needles = json.loads(manifest.read_text())
    if not isinstance(needles, list) or not needles:
        raise ValueError(f"Needle manifest {manifest} must be a non-empty JSON list.")
    for number, needle in enumerate(needles):
        missing = [field for field in NEEDLE_FIELDS if field not in needle]
        if missing:
            raise ValueError(f"Needle {number} of {manifest} lacks {missing}.")
        if not 0 <= needle["start"] < needle["end"]:
            raise ValueError(
                f"Needle {number} of {manifest}: start {needle['start']} must be below end {needle['end']}."
            )
        needle["clip"] = str((manifest.parent / needle["clip"]).resolve())
    return needles


def frames_at_1fps(path: str | Path, start: float = 0.0, end: float = float("inf")) -> Iterator[np.ndarray]:
    """The file's frames at 1 fps (the released sampling rule) from `start` to `end` seconds, chunk by chunk."""
    source = PyAVFile(Path(path))
    indices = VilampVideoProcessor().sample_frames(source_metadata(source), fps=1.0, max_frames=None)
    times = source.timestamps[indices]
    yield from source.iter_chunks(indices[(times >= start) & (times < end)], CHUNK)


def resized(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frames` at `height` x `width` (bilinear), unchanged when they already are."""
    if frames.shape[1:3] == (height, width):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


def haystack_frames(haystacks: Sequence[str], count: int, rng: random.Random) -> Iterator[np.ndarray]:
    """`count` frames from the haystacks at 1 fps, in a seeded order, repeating them when they are too short."""
    produced = 0
    while produced < count:
        order = list(haystacks)
        rng.shuffle(order)
        before = produced
        for path in order:
            for chunk in frames_at_1fps(path):
                chunk = chunk[: count - produced]
                produced += len(chunk)
                yield chunk
                if produced == count:
                    return
        if produced == before:
            raise ValueError(f"The haystacks {list(haystacks)} have no frames.")


def spliced(hay: Iterator[np.ndarray], start: int, needle: np.ndarray) -> Iterator[np.ndarray]:
    """The haystack chunks with the needle's frames inserted before haystack frame `start` (at most its length)."""
    done, inserted = 0, False
    for chunk in hay:
        if not inserted and done + len(chunk) >= start:
            yield from (chunk[: start - done], needle, chunk[start - done :])
            inserted = True
        else:
            yield chunk
        done += len(chunk)


def counted(chunks: Iterator[np.ndarray], bar) -> Iterator[np.ndarray]:
    """`chunks`, each counted on the progress `bar` once it has been used."""
    for chunk in chunks:
        yield chunk
        bar.update(len(chunk))


def write_case(path: Path, chunks: Iterator[np.ndarray], height: int, width: int) -> int:
    """Encodes frame chunks at 1 fps (H.264, sizes made even for yuv420p); returns the number of frames."""
    import av

    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)
        for chunk in chunks:
            if not len(chunk):
                continue
            for pixels in resized(chunk, height, width)[:, : stream.height, : stream.width]:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                frame.pts = count
                container.mux(stream.encode(frame))
                count += 1
        container.mux(stream.encode(None))
    return count


def build(
    haystacks: Sequence[str | Path],
    needles: Sequence[dict],
    lengths: Sequence[int],
    depths: Sequence[float],
    output: str | Path,
    seed: int = 0,
    show_progress: bool = False,
) -> list[dict]:
    """
    Writes one case per (length, depth) into `output`, with a needle and haystack order drawn from `seed`, and
    the lmms-eval task over them. Returns the cases (the rows of `cases.jsonl`). The same inputs and seed give the
    same videos and cases. `show_progress` draws a bar over the frames written.
    """
    from tqdm.auto import tqdm

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    haystacks = [str(Path(path).resolve()) for path in haystacks]
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"Depth {depth} is not between 0 and 1.")
    first = next(frames_at_1fps(haystacks[0]), None)
    if first is None:
        raise ValueError(f"Haystack {haystacks[0]} has no frames.")
    height, width = first.shape[1:3]
    rng = random.Random(seed)
    cases = []
    bar = tqdm(total=sum(lengths) * len(depths), desc="writing cases", unit="frame", disable=not show_progress)
    for length in lengths:
        for depth in depths:
            needle = needles[rng.randrange(len(needles))]
            needle_frames = np.concatenate(list(frames_at_1fps(needle["clip"], needle["start"], needle["end"])))
            if len(needle_frames) >= length:
                raise ValueError(f"Length {length} leaves no haystack around needle {needle['clip']}.")
            start = round(depth * (length - len(needle_frames)))
            hay = haystack_frames(haystacks, length - len(needle_frames), random.Random(rng.random()))

            chunks = counted(spliced(hay, start, needle_frames), bar)
            video = output / f"case_{len(cases):04d}_len{length}_depth{depth:g}.mp4"
            written = write_case(video, chunks, height, width)
            if written != length:
                raise RuntimeError(f"Wrote {written} frames for a case of {length}: {video}.")
            cases.append(
                {
                    "video": str(video.resolve()),
                    "length": length,
                    "depth": depth,
                    "needle_start_frame": start,
                    "needle_end_frame": start + len(needle_frames),
                    "needle_clip": needle["clip"],
                    "question": needle["question"],
                    "options": list(needle["options"]),
                    "answer": needle["answer"],
                }
            )
    bar.close()
    (output / "cases.jsonl").write_text("".join(json.dumps(case) + "\n" for case in cases))
    write_task(output, TASK_NAME, cases)
    return cases


def keyframe_recall(processor, cases: Sequence[dict], num_keyframes: int | None = None) -> dict:
    """
    For each case, the needle frames among the keyframes that `processor` selects with the case's question as
    query (1 fps, no frame cap, so frame i of a case is its sample i); and over all cases the share with at least
    one (`recall`) and the mean count (`mean_needle_keyframes`).
    """
    options = {} if num_keyframes is None else {"num_keyframes": num_keyframes}
    per_case = []
    for case in cases:
        inputs = processor(
            text=processor.video_token,
            videos=case["video"],
            query=case["question"],
            fps=1.0,
            max_frames=None,
            **options,
        )
        keyframes = inputs["keyframe_mask"].nonzero()[:, 0].tolist()
        kept = [i for i in keyframes if case["needle_start_frame"] <= i < case["needle_end_frame"]]
        per_case.append({"video": case["video"], "length": case["length"], "depth": case["depth"], "kept": len(kept)})
    return {
        "recall": sum(case["kept"] > 0 for case in per_case) / len(per_case),
        "mean_needle_keyframes": sum(case["kept"] for case in per_case) / len(per_case),
        "cases": per_case,
    }


def accuracy_grid(samples: Sequence[dict]) -> tuple[list[int], list[float], np.ndarray]:
    """Lengths, depths and the accuracy (percent) of each, from lmms-eval's logged samples of the task."""
    correct = defaultdict(list)
    for sample in samples:
        record = sample["accuracy"]
        correct[(record["length"], record["depth"])].append(bool(record["correct"]))
    lengths = sorted({length for length, _ in correct})
    depths = sorted({depth for _, depth in correct})
    grid = np.full((len(lengths), len(depths)), np.nan)
    for (length, depth), hits in correct.items():
        grid[lengths.index(length), depths.index(depth)] = 100.0 * sum(hits) / len(hits)
    return lengths, depths, grid


def plot_heatmap(samples: Sequence[dict], path: str | Path) -> Path:
    """Writes the accuracy by haystack length (rows) and needle depth (columns) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths, depths, grid = accuracy_grid(samples)
    figure, axes = plt.subplots(figsize=(1.2 * len(depths) + 2, 0.6 * len(lengths) + 1.5))
    image = axes.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    axes.set_xticks(range(len(depths)), [f"{depth:g}" for depth in depths])
    axes.set_yticks(range(len(lengths)), [str(length) for length in lengths])
    axes.set_xlabel("needle depth")
    axes.set_ylabel("haystack length (frames)")
    for (row, column), value in np.ndenumerate(grid):
        axes.text(column, row, "-" if np.isnan(value) else f"{value:.0f}", ha="center", va="center")
    figure.colorbar(image, label="accuracy (%)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: `build`, `recall`, `heatmap` (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m vilamp.evaluation.video_niah", description=__doc__.split("\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="build haystacks with a needle, the ground truth and the lmms-eval task")
    make.add_argument("--haystacks", nargs="+", required=True)
    make.add_argument("--needles", required=True, help="needle manifest (JSON)")
    make.add_argument("--lengths", nargs="+", type=int, required=True, help="haystack lengths in frames (1 fps)")
    make.add_argument("--depths", nargs="+", type=float, required=True, help="needle depths, 0 (start) to 1 (end)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--output", required=True)
    recall = commands.add_parser("recall", help="keyframe recall of the needle (processor only)")
    recall.add_argument("--cases", required=True, help="cases.jsonl written by build")
    recall.add_argument("--model", required=True, help="ViLAMP directory or Hub id (its processor)")
    recall.add_argument("--num-keyframes", type=int)
    heatmap = commands.add_parser("heatmap", help="accuracy by length and depth from lmms-eval's samples")
    heatmap.add_argument("--samples", required=True, help="lmms-eval's *_samples_video_niah.jsonl (--log_samples)")
    heatmap.add_argument("--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if args.command == "build":
        needles = load_needles(args.needles)
        cases = build(args.haystacks, needles, args.lengths, args.depths, args.output, args.seed, show_progress=True)
        print(f"{len(cases)} cases in {args.output} (task {TASK_NAME}: --include_path {args.output})")
    elif args.command == "recall":
        from transformers import AutoProcessor

        from .. import processing  # noqa: F401  (registers VilampProcessor with AutoProcessor)

        result = keyframe_recall(AutoProcessor.from_pretrained(args.model), read_jsonl(args.cases), args.num_keyframes)
        print(json.dumps(result, indent=1))
        # The JSON on stdout is for scripts; the summary goes to people, on stderr.
        kept = sum(case["kept"] > 0 for case in result["cases"])
        print(
            f"needle kept in {kept} of {len(result['cases'])} cases (recall {result['recall']:.2f}); "
            f"{result['mean_needle_keyframes']:.2f} needle keyframes per case",
            file=sys.stderr,
        )
    else:
        samples = read_jsonl(args.samples)
        path = plot_heatmap(samples, args.output)
        lengths, depths, _ = accuracy_grid(samples)
        print(f"wrote {path}: accuracy of {len(samples)} samples by {len(lengths)} lengths x {len(depths)} depths")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
