"""
`python -m benchmarks.many_questions [--seconds 300] [--width 640] [--height 360] [--questions 5] [--repeats 3]`

Several questions about one video, asked the way `vilamp ask VIDEO Q1 Q2 ...` asks them, side by side in one process
with the same model: each question from scratch (decoding, scoring and encoding the video again, as before the
video cache), and the questions in turn reusing the prepared video and the model's `VilampVideoCache`. The video is
real footage (the bundled clip looped, `looped_footage`), sampled at 1 fps. Prints a table and writes
`benchmarks/results/many-questions.json`: per-question medians, the follow-ups' time as a share of the first
question's, and whether every answer, keyframe set and token count matched.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vilamp.cli import ask, prepare_video
from vilamp.modeling_vilamp import VilampVideoCache
from vilamp.tiny import tiny_model_and_processor

from .looped_footage import make_looped_video


QUESTIONS = (
    "What happens in this video?",
    "Where is the rabbit at the start?",
    "What does the rabbit do after waking up?",
    "Is it day or night?",
    "How many animals appear?",
    "What colour is the grass?",
)
RESULTS = Path(__file__).parent / "results" / "many-questions.json"


def outcome(answer: str, inputs) -> dict:
    """What must not change between the two ways of asking: answer, frames, keyframes and prompt length."""
    return {
        "answer": answer,
        "frames": int(inputs["video_frame_counts"][0]),
        "keyframes": inputs["keyframe_mask"].nonzero()[:, 0].tolist(),
        "tokens": int(inputs["input_ids"].shape[1]),
    }


def ask_from_scratch(model, processor, video: str, questions, max_new_tokens: int) -> list[tuple[float, dict]]:
    """Every question prepares and encodes the video anew: (seconds, outcome) per question."""
    results = []
    for question in questions:
        start = time.perf_counter()
        prepared = prepare_video(processor, video, None, show_progress=False, show_decoder_logs=False)
        answer, inputs = ask(model, processor, prepared, question, None, max_new_tokens, None, show_progress=False)
        results.append((time.perf_counter() - start, outcome(answer, inputs)))
    return results


def ask_reusing_the_video(model, processor, video: str, questions, max_new_tokens: int) -> list[tuple[float, dict]]:
    """As `vilamp ask VIDEO Q1 Q2 ...`: the first question's time includes preparing and encoding the video."""
    cache = VilampVideoCache()
    results, start = [], time.perf_counter()
    prepared = prepare_video(processor, video, None, show_progress=False, show_decoder_logs=False)
    for question in questions:
        answer, inputs = ask(model, processor, prepared, question, None, max_new_tokens, cache, show_progress=False)
        results.append((time.perf_counter() - start, outcome(answer, inputs)))
        start = time.perf_counter()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--seconds", type=int, default=300, help="video length (default: 300, so 300 frames)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--questions", type=int, default=5, choices=range(2, len(QUESTIONS) + 1))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    questions = QUESTIONS[: args.questions]
    model, processor = tiny_model_and_processor()
    model.eval()
    scratch_runs, reuse_runs = [], []
    with tempfile.TemporaryDirectory() as folder:
        video = str(make_looped_video(Path(folder) / "looped.mp4", args.seconds, args.width, args.height))
        for repeat in range(args.repeats):
            # Alternating, so that a slow spell on a shared machine falls on both ways alike.
            for runs, way in ((scratch_runs, ask_from_scratch), (reuse_runs, ask_reusing_the_video)):
                runs.append(way(model, processor, video, questions, args.max_new_tokens))
                print(f"repeat {repeat + 1}/{args.repeats}: {way.__name__} done", flush=True)

    def medians(runs) -> list[float]:
        return [round(statistics.median(run[i][0] for run in runs), 3) for i in range(len(questions))]

    scratch, reuse = medians(scratch_runs), medians(reuse_runs)
    same = all(
        scratch_run[i][1] == reuse_run[i][1]
        for scratch_run, reuse_run in zip(scratch_runs, reuse_runs, strict=True)
        for i in range(len(questions))
    )
    follow_up = statistics.median(reuse[1:])
    record = {
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "video": {"seconds": args.seconds, "width": args.width, "height": args.height},
        "frames_sampled": reuse_runs[0][0][1]["frames"],
        "model": "embedded default (tiny, K = 2)",
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "questions": list(questions),
        "seconds_from_scratch": scratch,
        "seconds_reusing_the_video": reuse,
        "follow_up_share_of_first": round(follow_up / reuse[0], 4),
        "total_speedup": round(sum(scratch) / sum(reuse), 2),
        "same_answers_keyframes_and_tokens": same,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{'question':<45} {'from scratch s':>15} {'reusing s':>10}")
    for question, fresh, reused in zip(questions, scratch, reuse, strict=True):
        print(f"{question:<45} {fresh:>15.2f} {reused:>10.2f}")
    print(
        f"\nfollow-up / first question: {record['follow_up_share_of_first']:.1%}; all questions "
        f"{record['total_speedup']}x faster; same answers, keyframes and tokens: {same}"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
