"""Video-NIAH on CPU: haystacks and needles made here, a deterministic build, keyframe recall, the heatmap."""

import json
from pathlib import Path

import numpy as np
import pytest

from media import write_video
from vilamp.evaluation.video_niah import (
    accuracy_grid,
    build,
    frames_at_1fps,
    keyframe_recall,
    load_needles,
    main,
    plot_heatmap,
)
from vilamp.tiny import BUNDLED_CLIP, tiny_model_and_processor


GREY, RED = (128, 128, 128), (230, 20, 20)


def solid(count: int, colour, height: int = 36, width: int = 48) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (count, height, width, 3)).copy()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[list[Path], Path]:
    directory = tmp_path_factory.mktemp("niah_inputs")
    # Two grey haystacks of 12 and 9 s at 2 fps (1 fps sampling keeps every other frame), and a red 4 s needle
    # inside a 6 s clip, at a resolution the haystack does not have.
    haystacks = [
        write_video(directory / "hay_a.mp4", solid(24, GREY), fps=2),
        write_video(directory / "hay_b.mp4", solid(18, (100, 100, 140)), fps=2),
    ]
    needle_clip = np.concatenate([solid(2, GREY, 40, 40), solid(4, RED, 40, 40), solid(0, GREY, 40, 40)])
    write_video(directory / "needle.mp4", needle_clip, fps=1)
    needles = [
        {"clip": "needle.mp4", "start": 2, "end": 6, "question": "What colour is the screen that appears?",
         "options": ["A. red", "B. blue", "C. green"], "answer": "A"},
        {"clip": str(BUNDLED_CLIP), "start": 1, "end": 4, "question": "What animal appears?",
         "options": ["A. a rabbit", "B. a horse"], "answer": "A"},
    ]  # fmt: skip
    manifest = directory / "needles.json"
    manifest.write_text(json.dumps(needles))
    return haystacks, manifest


def test_build_splices_the_needle_at_each_depth_deterministically(tmp_path, inputs):
    haystacks, manifest = inputs
    needles = load_needles(manifest)
    cases = build(haystacks, needles[:1], [20, 30], [0.0, 0.5, 1.0], tmp_path / "a", seed=3)
    again = build(haystacks, needles[:1], [20, 30], [0.0, 0.5, 1.0], tmp_path / "b", seed=3)
    assert [case["needle_start_frame"] for case in cases] == [0, 8, 16, 0, 13, 26]
    assert all(case["needle_end_frame"] - case["needle_start_frame"] == 4 for case in cases)
    for case, twin in zip(cases, again, strict=True):
        assert Path(case["video"]).read_bytes() == Path(twin["video"]).read_bytes()
        frames = np.concatenate(list(frames_at_1fps(case["video"])))
        assert frames.shape == (case["length"], 36, 48, 3)
        red = (frames[..., 0].astype(int) - frames[..., 2]).mean(axis=(1, 2)) > 100
        assert np.flatnonzero(red).tolist() == list(range(case["needle_start_frame"], case["needle_end_frame"]))
    rows = [json.loads(line) for line in (tmp_path / "a" / "cases.jsonl").read_text().splitlines()]
    assert rows == cases
    assert "task: video_niah" in (tmp_path / "a" / "video_niah.yaml").read_text()


def test_keyframe_recall_counts_needle_keyframes(tmp_path, inputs):
    haystacks, manifest = inputs
    cases = build(haystacks, load_needles(manifest), [24], [0.0, 1.0], tmp_path, seed=0)
    _, processor = tiny_model_and_processor()
    # Every frame a keyframe: each needle frame is kept.
    everything = keyframe_recall(processor, cases, num_keyframes=24)
    assert everything["recall"] == 1.0
    needle_sizes = [case["needle_end_frame"] - case["needle_start_frame"] for case in cases]
    assert [case["kept"] for case in everything["cases"]] == needle_sizes
    one = keyframe_recall(processor, cases, num_keyframes=1)
    assert all(case["kept"] in (0, 1) for case in one["cases"])
    assert one["recall"] == sum(case["kept"] for case in one["cases"]) / len(cases)


def test_heatmap_of_accuracy_by_length_and_depth(tmp_path):
    samples = [
        {"accuracy": {"length": 2000, "depth": 0.0, "correct": True}},
        {"accuracy": {"length": 2000, "depth": 0.0, "correct": False}},
        {"accuracy": {"length": 2000, "depth": 0.5, "correct": True}},
        {"accuracy": {"length": 5000, "depth": 0.5, "correct": False}},
    ]
    lengths, depths, grid = accuracy_grid(samples)
    assert (lengths, depths) == ([2000, 5000], [0.0, 0.5])
    np.testing.assert_array_equal(grid, [[50.0, 100.0], [np.nan, 0.0]])
    png = plot_heatmap(samples, tmp_path / "heat.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_build_and_bad_manifest(tmp_path, inputs, capsys):
    haystacks, manifest = inputs
    argv = ["build", "--haystacks", *map(str, haystacks), "--needles", str(manifest), "--lengths", "12"]
    assert main([*argv, "--depths", "0.5", "--output", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "1 cases" in out
    assert "writing cases: 100%" in err and "12/12" in err  # the progress bar, over the frames written
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps([{"clip": "x.mp4", "start": 5, "end": 2, "question": "q", "options": [], "answer": "A"}])
    )
    with pytest.raises(ValueError, match="bad.json: start 5"):
        load_needles(bad)


def test_command_line_recall_and_heatmap_say_what_they_found(tmp_path, inputs, capsys):
    haystacks, manifest = inputs
    cases = build(haystacks, load_needles(manifest)[:1], [24], [0.0, 1.0], tmp_path / "cases", seed=0)
    model_dir = tmp_path / "tiny"
    _, processor = tiny_model_and_processor()
    processor.save_pretrained(model_dir)
    argv = ["recall", "--cases", str(tmp_path / "cases" / "cases.jsonl"), "--model", str(model_dir)]
    assert main([*argv, "--num-keyframes", "24"]) == 0
    out, err = capsys.readouterr()
    # Every frame a keyframe: both cases keep all 4 needle frames.
    assert json.loads(out)["recall"] == 1.0 and len(cases) == 2
    assert err.strip().splitlines()[-1] == "needle kept in 2 of 2 cases (recall 1.00); 4.00 needle keyframes per case"

    samples = tmp_path / "samples.jsonl"
    records = [{"accuracy": {"length": 24, "depth": depth, "correct": True}} for depth in (0.0, 1.0, 1.0)]
    samples.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert main(["heatmap", "--samples", str(samples), "--output", str(tmp_path / "heat.png")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'heat.png'}: accuracy of 3 samples by 1 lengths x 2 depths\n"
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
