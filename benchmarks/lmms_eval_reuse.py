"""
`python -m benchmarks.lmms_eval_reuse [--videos 3] [--questions-per-video 3] [--seconds 300] [--repeats 3]`

lmms-eval's own command on a local multiple-choice task with several questions per video (real footage, the bundled
clip looped at slightly different sizes so that no two videos share frames), the embedded default saved as a model
directory: once as before the video cache (`prepared_videos=0,cache_gib=0`: every question decodes, scores and
encodes its video) and once as shipped (each video prepared and encoded for its first question), alternating. Prints
and writes `benchmarks/results/lmms-eval-reuse.json`: each run's wall time (process start to exit, model loading
included), the medians, their ratio, and whether the two ways gave the same answers.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vilamp.evaluation.lmms_eval_task import write_task
from vilamp.tiny import tiny_model_and_processor

from .looped_footage import make_looped_video


RESULTS = Path(__file__).parent / "results" / "lmms-eval-reuse.json"
SIZES = ((640, 360), (656, 368), (624, 352), (672, 384))
QUESTIONS = (
    ("What is in the first frame?", ["A. a rabbit", "B. a tree", "C. a river"], "A"),
    ("What time of day is it?", ["A. night", "B. day"], "B"),
    ("Does the rabbit move?", ["A. yes", "B. no"], "A"),
    ("What colour is the sky?", ["A. blue", "B. red", "C. green"], "A"),
)
WAYS = {"every question from scratch": ",prepared_videos=0,cache_gib=0", "reusing each video": ""}


def run_lmms_eval(folder: Path, model_dir: Path, extra_args: str, name: str) -> tuple[float, list[str]]:
    """One lmms-eval run: its wall time and the responses by document."""
    output = folder / f"out-{name}"
    command = [
        sys.executable, "-m", "lmms_eval", "eval", "--model", "vilamp",
        "--model_args", f"pretrained={model_dir},max_frames=600,device=cpu{extra_args}",
        "--tasks", "vilamp_reuse", "--include_path", str(folder / "task"), "--batch_size", "1",
        "--output_path", str(output), "--log_samples",
    ]  # fmt: skip
    env = {**os.environ, "HF_HOME": str(folder / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    run = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"lmms-eval failed:\n{run.stderr[-3000:]}")
    (samples,) = glob.glob(str(output / "*" / "*_samples_vilamp_reuse.jsonl"))
    records = sorted((json.loads(line) for line in Path(samples).read_text().splitlines()), key=lambda r: r["doc_id"])
    return seconds, [record["filtered_resps"] for record in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--videos", type=int, default=3, choices=range(1, len(SIZES) + 1))
    parser.add_argument("--questions-per-video", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--seconds", type=int, default=300, help="each video's length (1 fps: as many frames)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    times: dict[str, list[float]] = {way: [] for way in WAYS}
    responses: dict[str, list[list[str]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        model_dir = folder / "tiny"
        model, processor = tiny_model_and_processor()
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        docs = []
        for number, (width, height) in enumerate(SIZES[: args.videos]):
            video = make_looped_video(folder / f"video{number}.mp4", args.seconds, width, height)
            for question, options, answer in QUESTIONS[: args.questions_per_video]:
                docs.append({"video": str(video), "question": question, "options": options, "answer": answer})
        write_task(folder / "task", "vilamp_reuse", docs, max_new_tokens=16)
        for repeat in range(args.repeats):
            # Alternating, so that a slow spell falls on both alike.
            for number, (way, extra_args) in enumerate(WAYS.items()):
                seconds, answers = run_lmms_eval(folder, model_dir, extra_args, f"{repeat}-{number}")
                times[way].append(round(seconds, 2))
                responses[way].append(answers)
                print(f"repeat {repeat + 1}/{args.repeats}, {way}: {seconds:.1f} s", flush=True)

    medians = {way: statistics.median(seconds) for way, seconds in times.items()}
    scratch, reuse = medians.values()
    same = all(
        answers == responses["every question from scratch"][0] for runs in responses.values() for answers in runs
    )
    record = {
        "task": {"videos": args.videos, "questions_per_video": args.questions_per_video, "seconds": args.seconds},
        "model": "embedded default (tiny, K = 2), CPU, batch size 1",
        "seconds": times,
        "median_seconds": medians,
        "ratio": round(reuse / scratch, 3),
        "same_answers": same,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    for way, seconds in medians.items():
        print(f"{way:<30} {seconds:8.1f} s")
    print(f"ratio: {record['ratio']:.2f}; same answers: {same}\nwrote {args.output}")


if __name__ == "__main__":
    main()
