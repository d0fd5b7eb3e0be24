"""The benchmark harness's own correctness: its baseline selects the same frames, its video is what it says."""

import argparse
import json
import sys

import numpy as np
import pytest
import torch

from benchmarks.measure import (
    METHODS,
    NUM_KEYFRAMES,
    SIMILARITY_THRESHOLD,
    dense_similarity_keyframes,
    siglip_flops_per_frame,
)
from benchmarks.synthetic_video import make_video
from vilamp.modeling_vilamp import VilampConfig
from vilamp.processing import select_keyframes
from vilamp.processing.video_decoding import open_video, sample_frame_indices


@pytest.mark.parametrize("seed", range(4))
def test_dense_matrix_baseline_selects_the_same_keyframes(seed):
    generator = torch.Generator().manual_seed(seed)
    # Scenes of near-duplicate frames, so that the similarity threshold matters.
    centres = torch.randn(12, 64, generator=generator)
    embeds = centres.repeat_interleave(50, dim=0) + 0.3 * torch.randn(600, 64, generator=generator)
    query = torch.randn(64, generator=generator)
    expected = select_keyframes(embeds, query, NUM_KEYFRAMES, SIMILARITY_THRESHOLD)
    assert torch.equal(dense_similarity_keyframes(embeds, query), expected)


def test_siglip_cost_of_the_released_tower():
    # The figure for SigLIP so400m at 384 px is about 0.69 TFLOP per frame (27 layers; 26 are kept).
    assert 0.62e12 < siglip_flops_per_frame(VilampConfig()) < 0.70e12


def test_synthetic_video_is_h264_at_2_fps(tmp_path):
    path = make_video(tmp_path / "video.mp4", num_seconds=6)
    source = open_video(str(path))
    assert source.num_frames == 12 and source.native_fps == 2.0
    indices = sample_frame_indices(source.num_frames, source.native_fps, 1.0, None)
    assert len(indices) == 6
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (640, 360)


def front_end_record(side: str, rss_gb: float, seconds: float | None = None) -> dict:
    """One `benchmarks.front_end_run` record: finished in `seconds`, or out of memory when that is None."""
    record = {"side": side, "seconds": {}, "rss_peak_bytes_overall": rss_gb * 1e9}
    if seconds is None:
        record["failed"] = "out of memory: Unable to allocate 4.95 GiB"
    else:
        record.update(seconds={"front_end": seconds}, total_seconds=seconds, frames=3005, keyframes=[0, 7])
    return record


def test_front_end_summary_reports_a_side_that_ran_out_of_memory(tmp_path):
    from benchmarks.front_end import plot, summarize, table

    point = {
        "size": "640x360",
        "runs": {
            "released": [front_end_record("released", gb) for gb in (8.0, 9.0, 8.5)],
            "project": [front_end_record("project", gb, s) for gb, s in ((3.4, 280.0), (3.5, 290.0), (3.6, 300.0))],
        },
    }
    summary = summarize(point)
    # The median of what the failed runs held: a floor under what they needed, not a peak they reached.
    assert summary["released"]["rss_at_failure"] == 8.5e9 and "out of memory" in summary["released"]["failed"]
    assert summary["project"]["total_seconds"] == 290.0 and summary["project"]["rss_peak_bytes"] == 3.5e9
    assert summary["ratios"] == {}
    (row,) = table([summary]).splitlines()[2:]
    assert row.split() == ["640x360", "3005", "OOM", "290.0", "-", "-", "-", "-", ">8.50", "3.50", "-"]
    plot([summary], tmp_path / "front-end.png", "title")
    assert (tmp_path / "front-end.png").stat().st_size > 0


def test_front_end_ratios_against_the_released_codes_own_clip_time():
    from benchmarks.front_end import summarize

    released = front_end_record("released", 3.6, 35.0)
    stages = {"decode": 7.0, "siglip_preprocess": 3.5, "clip_preprocess": 2.5, "score": 20.0, "select": 2.0}
    released["seconds"] = stages
    scorer = {"side": "scorer", "seconds": {"score": 18.0, "score_in_threads": 16.0}, "rss_peak_bytes_overall": 2e9}
    scorer["frames"] = 3005
    point = {
        "size": "640x360",
        "runs": {"released": [released], "project": [front_end_record("project", 2.2, 28.0)], "scorer": [scorer]},
    }
    ratios = summarize(point)["ratios"]
    assert ratios["speedup_over_released"] == 35.0 / 28.0
    assert ratios["front_end_over_released_clip"] == 28.0 / 20.0
    assert ratios["front_end_over_scorer"] == 28.0 / 18.0 and ratios["rss_of_released"] == 2.2 / 3.6


def test_released_side_runs_the_checkouts_own_code_without_its_side_effects(tmp_path):
    # A stand-in checkout whose package __init__ files and script body would fail if they ran.
    from benchmarks.front_end_released import import_released, released_function

    (tmp_path / "scripts" / "eval").mkdir(parents=True)
    (tmp_path / "scripts" / "eval" / "exp_vMME.py").write_text(
        "raise SystemExit('the script body ran')\n\ndef access_video_by_sec(path, max_frame_num=3600):\n"
        "    return np.arange(max_frame_num)\n"
    )
    package = tmp_path / "llava" / "model"
    package.mkdir(parents=True)
    for folder in (tmp_path / "llava", package):
        (folder / "__init__.py").write_text("raise ImportError('a package __init__ ran')\n")
    (package / "selector.py").write_text("SETTING = 32\n")
    function = released_function(tmp_path / "scripts" / "eval" / "exp_vMME.py", "access_video_by_sec", {"np": np})
    assert function("clip.mp4", max_frame_num=3).tolist() == [0, 1, 2]
    try:
        assert import_released(tmp_path, "llava.model.selector").SETTING == 32
    finally:
        for name in ("llava.model.selector", "llava.model", "llava"):
            sys.modules.pop(name, None)


def test_gpu_check_runs_each_frame_count_once_smallest_first(capsys):
    from benchmarks.gpu_check import parse_frame_counts

    parser = argparse.ArgumentParser(prog="gpu_check")
    assert parse_frame_counts("10000,1000,10000", parser) == [1000, 10000]
    for text, message in (("0,20", "must be positive"), ("ten", "comma-separated integers")):
        with pytest.raises(SystemExit):
            parse_frame_counts(text, parser)
        assert message in capsys.readouterr().err


def test_gpu_check_smoke_test_on_a_machine_without_a_gpu(tmp_path, capsys):
    # The command run on lent GPUs, as its docs give it for a CPU: it must still run end to end here.
    from benchmarks.gpu_check import main
    from benchmarks.run import STAGES

    output = tmp_path / "check.json"
    # One run (each is a fresh process); several frame counts come sorted and distinct (parse_frame_counts, below).
    arguments = ["--device", "cpu", "--size", "tiny", "--frames", "20", "--cache-dir", str(tmp_path)]
    main([*arguments, "--output", str(output)])
    report = json.loads(output.read_text())
    assert [run["frames"] for run in report["runs"]] == [20]
    (run,) = report["runs"]
    assert set(run["seconds"]) == set(STAGES) and run["requested_frames"] == run["frames"]
    # Three questions in turn about the same video: on the CPU the first runs its 20 frames through the tower (on an
    # accelerator the preparing would), the follow-ups read them from the video cache.
    questions = report["questions_in_turn"]
    assert questions["frames"] == 20 and questions["frames_through_tower"] == [20, 0, 0]
    assert questions["frames_through_tower_preparing"] == 0
    assert questions["cache_bytes"] > 0 and len(questions["question_seconds"]) == 3
    assert questions["first_question_seconds"] == questions["prepare_seconds"] + questions["question_seconds"][0]
    precision = report["bf16_vs_fp32"]
    assert 0 < precision["max_abs_diff"] < precision["max_abs_fp32"]
    table = capsys.readouterr().out
    assert table.count("decode_resize_score") == 1 and "bf16 vs fp32 logits" in table
    assert "questions in turn, 20 frames" in table and "while preparing 0, then [20, 0, 0]" in table
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_memory_reports_the_memory_per_extra_frame():
    from benchmarks.training_memory import FRAME_BYTES, MODES, summary

    # Peaks of 100 MB plus 1, 2 and 3 frames' bytes per frame, by mode: the per-frame figure is that multiple.
    medians = {
        mode: {n: 100 * 2**20 + times * n * FRAME_BYTES for n in (64, 256, 1024)}
        for times, mode in enumerate(MODES, start=1)
    }
    text = summary(medians, [64, 256, 1024])
    assert f"| 64 | {' | '.join(f'{medians[mode][64] / 2**20:.0f}' for mode in MODES)} |" in text
    frame_kb = FRAME_BYTES / 1024
    for times, mode in enumerate(MODES, start=1):
        assert f"- {mode}: {times * frame_kb:.0f} KB ({times:.2f}x the frame)" in text
    assert "Per extra frame (64 -> 1024 frames)" in text
    one_count = summary({mode: {64: runs[64]} for mode, runs in medians.items()}, [64])
    assert "| 64 |" in one_count and "Per extra frame" not in one_count and "give two or more" in one_count


def test_each_method_measures_the_same_frames_and_the_harness_reports_them(tmp_path):
    # In this process: the docs test runs `benchmarks.run` as typed for one method (a fresh process per measurement
    # costs about 10 s of imports); here all three, on 40 sampled frames, so that 32 keyframes leave 8 merged.
    from benchmarks.measure import measure
    from benchmarks.run import STAGES, plot, summarize, table
    from benchmarks.synthetic_video import cached_video

    video = cached_video(tmp_path, 40)
    results = [summarize([measure(method, video, "tiny", torch.device("cpu"))], 40) for method in METHODS]
    by_method = {result["method"]: result for result in results}
    assert all(result["frames"] == 40 and set(result["seconds"]) == set(STAGES) for result in results)
    # Every keyframe gives 196 tokens, every other frame one, and one newline ends the video.
    assert by_method["vilamp"]["visual_tokens"] == 196 * 32 + 8 + 1 == by_method["vilamp-unchunked"]["visual_tokens"]
    assert by_method["dense-uniform"]["visual_tokens"] == 196 * 40 + 1
    rows = table(results).splitlines()[2:]
    assert [row.split()[:3] for row in rows] == [
        [method, "40", f"{by_method[method]['visual_tokens']:,}"] for method in METHODS
    ]
    plot(results, tmp_path / "run.png", "title")
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
