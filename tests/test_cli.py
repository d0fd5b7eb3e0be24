"""The `vilamp` command end to end (subprocess), its JSON record, its errors, and the keyframe timeline picture."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import CLIP_PATH, FIXTURES


VILAMP = Path(sys.executable).parent / "vilamp"  # the console script that `pip install` puts beside python


def vilamp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(VILAMP), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def json_run(tmp_path_factory) -> tuple[dict, Path]:
    plot = tmp_path_factory.mktemp("cli") / "keyframes.png"
    result = vilamp("ask", str(CLIP_PATH), "What is the rabbit doing?", "--json", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), plot


def test_ask_on_the_embedded_default_prints_answer_keyframes_and_budget():
    result = vilamp("ask", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "NOTE: embedded default = tiny random-weight model; the answer below is noise."
    assert lines[1].startswith("answer: ")
    keyframes = [line for line in lines if line.startswith("keyframe ")]
    assert len(keyframes) == 2 and all(re.search(r"frame +\d+ at 00:00:0[0-5]$", line) for line in keyframes)
    assert "frames sampled: 6 (about 1 per second)" in lines
    # 2 keyframes x 196 + 4 merged frames + 1 newline, against 6 x 196 + 1 for uniform encoding.
    assert "visual tokens: 397 (uniform 196 per frame would be 1,177; 3.0x fewer)" in lines
    assert result.stderr == ""  # --quiet: no progress bars


def test_progress_bars_on_stderr_unless_quiet():
    result = vilamp("ask")
    assert result.returncode == 0, result.stderr
    assert "decoding and scoring frames" in result.stderr and "encoding frames" in result.stderr


def test_json_record_schema(json_run):
    record, plot = json_run
    assert set(record) == {
        "answer",
        "model",
        "embedded_default",
        "video",
        "question",
        "frames_sampled",
        "keyframes",
        "visual_tokens",
        "uniform_tokens",
        "plot",
    }
    assert record["embedded_default"] is True and record["model"] is None
    assert isinstance(record["answer"], str) and record["question"] == "What is the rabbit doing?"
    frames, keyframes = record["frames_sampled"], record["keyframes"]
    assert frames == 6 and len(keyframes) == 2
    for keyframe in keyframes:
        assert set(keyframe) == {"frame", "seconds", "timestamp"}
        assert 0 <= keyframe["frame"] < frames and re.fullmatch(r"\d\d:\d\d:\d\d", keyframe["timestamp"])
    assert record["visual_tokens"] == 196 * 2 + (frames - 2) + 1
    assert record["uniform_tokens"] == 196 * frames + 1
    assert record["plot"] == str(plot)


def test_plot_is_a_png_of_sensible_size(json_run):
    _, plot = json_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        width, height = image.size
    assert image.format == "PNG" and width == 1200 and 400 <= height <= 1200


def test_ask_with_a_converted_model(tmp_path):
    model_dir = tmp_path / "model"
    convert = vilamp("convert", "--checkpoint", str(FIXTURES / "heavy-fill"), "--output", str(model_dir), "--quiet")
    assert convert.returncode == 0, convert.stderr
    assert convert.stdout == "" and (model_dir / "config.json").is_file()
    result = vilamp("ask", str(CLIP_PATH), "what?", "--model", str(model_dir), "--json", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["embedded_default"] is False and record["model"] == str(model_dir)
    assert len(record["keyframes"]) == 6  # every sampled frame: the clip has 6, the fixture's K is 8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["ask", "missing.mp4"], "vilamp: error: no such video file: missing.mp4"),
        (["ask", "not-a-video.mp4"], "vilamp: error: Cannot read video not-a-video.mp4"),
        (["ask", str(CLIP_PATH), "--model", "no/such/model"], "vilamp: error: no such model directory"),
        (["ask", "--model", str(FIXTURES)], "vilamp: error: VIDEO is required with --model"),
        (["ask", "--plot", "timeline.jpg"], "vilamp: error: --plot writes a PNG"),
        (["convert", "--checkpoint", "missing-dir/x/y", "--output", "out"], "vilamp: error: --checkpoint"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, arguments, message):
    (tmp_path / "not-a-video.mp4").write_text("this is not a video")
    result = vilamp(*arguments, "--quiet", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_debug_shows_the_traceback(tmp_path):
    result = vilamp("ask", "missing.mp4", "--debug", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "CliError" in result.stderr


def test_bad_option_values_are_usage_errors():
    result = vilamp("ask", "--keyframes", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
