"""
The `vilamp` command: end to end as a person types it (the console script in a fresh process, progress bars on, a
terminal for chat), its JSON record, the keyframe timeline picture, model loading with and without running shipped
code, and its errors. What needs no fresh Python runs in this process through `cli.main`: each fresh one spends about
10 s importing torch and transformers.
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLIP_PATH, FIXTURES
from media import write_video
from vilamp import cli
from vilamp.tiny import TINY_DESCRIPTION


VILAMP = Path(sys.executable).parent / "vilamp"  # the console script that `pip install` puts beside python
PROGRESS_BARS = ("decoding and scoring frames", "encoding frames")
# The first line without --model; the embedded default keeps 2 keyframes (vilamp/tiny.py).
EMBEDDED_DEFAULT_NOTE = (
    "NOTE: embedded default = tiny random-weight model keeping 2 keyframes (ViLAMP keeps 32); the answer below "
    "is noise."
)


def vilamp(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VILAMP), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})}
    )


def run_main(capfd, *args: str) -> tuple[int, str, str]:
    """`vilamp ARGS` in this process: exit code, stdout and stderr (file descriptors, so C libraries' writes too)."""
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def own_modules_cache(tmp_path, monkeypatch):
    """Code that `--trust-remote-code` runs is copied into HF_MODULES_CACHE: one per test, none in the user's."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if the command gets as far as loading a model: its checks must come first."""

    def load(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "load_model_and_processor", load)


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory) -> Path:
    """
    40 s of real footage, 320x180 at 25 fps: the bundled clip's 132 frames played forwards and backwards in turn.
    About 1 frame per second is sampled, 40 frames: 5 chunks of 8 through the vision tower on CPU.
    """
    with av.open(str(CLIP_PATH)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24", width=320, height=180) for f in container.decode(video=0)])
    forwards_and_back = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    order = np.resize(forwards_and_back, 40 * 25)  # repeated as often as it takes
    path = tmp_path_factory.mktemp("clips") / "long.mp4"
    return write_video(path, frames[order], fps=25, options={"preset": "ultrafast"})


@pytest.fixture(scope="module")
def json_run(tmp_path_factory) -> tuple[dict, Path]:
    # In this process (the tests that run the command itself use its output as the reference): --json prints the
    # record with print(), so redirecting sys.stdout catches it.
    plot = tmp_path_factory.mktemp("cli") / "keyframes.png"
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert cli.main(["ask", str(CLIP_PATH), "What is the rabbit doing?", "--json", "--plot", str(plot)]) == 0
    return json.loads(output.getvalue()), plot


@pytest.fixture(scope="module")
def converted_model(tmp_path_factory) -> Path:
    """
    A fixture checkpoint converted by `vilamp convert`, whose shipped `modeling_vilamp.py` is tampered with: on import
    it creates the file named by $SHIPPED_CODE_RAN.
    """
    from transformers.utils import logging

    model_dir = tmp_path_factory.mktemp("converted") / "model"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(
            ["convert", "--checkpoint", str(FIXTURES / "heavy-fill"), "--output", str(model_dir), "--quiet"]
        )
    logging.enable_progress_bar()  # --quiet turns transformers' bars off for the whole process
    assert code == 0, err.getvalue()
    assert out.getvalue() == "" and err.getvalue() == ""  # --quiet: no messages, no weight-loading bar
    shipped = model_dir / "modeling_vilamp.py"
    marker_code = 'import os, pathlib\npathlib.Path(os.environ["SHIPPED_CODE_RAN"]).touch()\n'
    shipped.write_text(marker_code + shipped.read_text())
    return model_dir


def answer_lines_and_bars(result: subprocess.CompletedProcess, frames: int) -> list[str]:
    """
    stdout's lines, once stderr is checked to hold the two progress bars run to the end, and nothing else: no
    traceback, no decoder log lines. Decoding runs to `frames` frames; encoding to those and the frames that others
    are compared against, encoded first: at most one per keyframe, and the embedded default keeps 2. The first line
    is the embedded default's note.
    """
    assert result.returncode == 0, result.stderr
    bar_updates = [update for update in re.split(r"[\r\n]+", result.stderr) if update.strip()]  # \r redraws a bar
    assert all(update.startswith(PROGRESS_BARS) for update in bar_updates), result.stderr
    decoding, encoding = PROGRESS_BARS
    assert any(update.startswith(f"{decoding}: 100%") and f" {frames}/{frames} " in update for update in bar_updates)
    encoded = {f" {n}/{n} " for n in range(frames, frames + 3)}
    assert any(
        update.startswith(f"{encoding}: 100%") and any(total in update for total in encoded) for update in bar_updates
    )
    lines = result.stdout.splitlines()
    assert lines[0] == EMBEDDED_DEFAULT_NOTE
    return lines


def test_several_questions_about_a_long_clip_as_typed(long_clip):
    # The console script with its bars on, as a person runs it. The video is decoded and encoded once for all three
    # questions: one decoding bar and one encoding bar. 40 frames are 5 vision chunks, so the encoding bar redraws
    # while the tower still has chunks to go; its hook once broke the tower whenever the bar redrew at an update,
    # which on a busy machine is any update 0.1 s after the last: TQDM_MININTERVAL=0 redraws at each.
    questions = ("Who?", "What does the rabbit do?", "Where?")
    result = vilamp("ask", str(long_clip), *questions, env={"TQDM_MININTERVAL": "0"})
    lines = answer_lines_and_bars(result, frames=40)
    for bar in PROGRESS_BARS:
        assert len(re.findall(rf"{bar}:\s+0%", result.stderr)) == 1, result.stderr
    headings = [line for line in lines if line.startswith("question ")]
    assert headings == [f"question {number}: {question}" for number, question in enumerate(questions, 1)]
    assert len([line for line in lines if line.startswith("answer: ")]) == 3
    keyframes = [line for line in lines if line.startswith("keyframe ")]
    assert len(keyframes) == 3 * 2 and all(
        re.search(r"video frame +\d+ at 00:00:[0-3]\d \(sample [1-3]?\d(, filled a gap)?\)$", line)
        for line in keyframes
    )
    assert lines.count("frames sampled: 40 (about 1 per second)") == 3
    # K = 2: 2 keyframes x 196 + 38 merged frames + 1 newline.
    assert lines.count("visual tokens: 431 (uniform 196 per frame would be 7,841; 18.2x fewer)") == 3


def test_frames_thinned_by_max_frames_are_reported_at_their_spacing(long_clip, capfd):
    # The clip's 40 one-per-second samples (0 s to 39 s) thinned to 10 keep the first and the last: 39 s / 9 apart.
    code, out, err = run_main(capfd, "ask", str(long_clip), "What does the rabbit do?", "--max-frames", "10")
    lines = answer_lines_and_bars(subprocess.CompletedProcess([], code, out, err), frames=10)
    assert lines[1].startswith("answer: ")
    assert f"frames sampled: 10 (about 1 every {39 / 9:.3g} s)" in lines


def test_ask_on_the_embedded_default_prints_answer_keyframes_and_budget(capfd):
    code, out, err = run_main(capfd, "ask", "--quiet")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == EMBEDDED_DEFAULT_NOTE
    assert lines[1].startswith("answer: ")
    keyframes = [line for line in lines if line.startswith("keyframe ")]
    assert len(keyframes) == 2 and all(
        re.search(r"video frame +\d+ at 00:00:0[0-5] \(sample [0-5](, filled a gap)?\)$", line) for line in keyframes
    )
    assert "frames sampled: 6 (about 1 per second)" in lines
    # 2 keyframes x 196 + 4 merged frames + 1 newline, against 6 x 196 + 1 for uniform encoding.
    assert "visual tokens: 397 (uniform 196 per frame would be 1,177; 3.0x fewer)" in lines
    assert err == ""  # --quiet: no progress bars


def test_json_record_schema(json_run):
    record, plot = json_run
    assert set(record) == {
        "answer",
        "model",
        "embedded_default",
        "video",
        "question",
        "frames_sampled",
        "seconds_between_frames",
        "keyframes",
        "visual_tokens",
        "uniform_tokens",
        "plot",
        "seconds",
    }
    assert record["embedded_default"] is True and record["model"] is None
    assert isinstance(record["answer"], str) and record["question"] == "What is the rabbit doing?"
    frames, keyframes = record["frames_sampled"], record["keyframes"]
    assert frames == 6 and len(keyframes) == 2
    assert record["seconds_between_frames"] == 1.0  # the 6 s clip sampled at 1 fps
    for keyframe in keyframes:
        assert set(keyframe) == {"sample", "video_frame", "seconds", "timestamp", "chosen_by"}
        assert keyframe["chosen_by"] in ("relevance", "gap filling")
        assert 0 <= keyframe["sample"] < frames and re.fullmatch(r"\d\d:\d\d:\d\d", keyframe["timestamp"])
        # The clip is 25 fps, sampled at 1 fps: sample n is the video's frame 25 n, n seconds in.
        assert keyframe["video_frame"] == 25 * keyframe["sample"] and keyframe["seconds"] == keyframe["sample"]
    assert record["visual_tokens"] == 196 * 2 + (frames - 2) + 1
    assert record["uniform_tokens"] == 196 * frames + 1
    assert record["plot"] == str(plot)


def test_several_questions_as_json_lines_equal_one_question_runs(json_run, tmp_path, capfd):
    single, _ = json_run
    code, out, err = run_main(
        capfd, "ask", str(CLIP_PATH), "Who?", "What is the rabbit doing?", "--json", "--plot", str(tmp_path / "k.png")
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [record["question"] for record in records] == ["Who?", "What is the rabbit doing?"]
    assert [record["plot"] for record in records] == [str(tmp_path / "k-1.png"), str(tmp_path / "k-2.png")]
    assert all((tmp_path / f"k-{number}.png").is_file() for number in (1, 2))
    # The second question, asked after another about the same video, is answered as when asked alone.
    unrelated = ("seconds", "plot")
    assert {k: v for k, v in records[1].items() if k not in unrelated} == {
        k: v for k, v in single.items() if k not in unrelated
    }
    assert all(record["seconds"] > 0 for record in records)


def test_the_tower_running_while_the_video_decodes_gives_the_same_answers(json_run, capfd, monkeypatch):
    # What an accelerator does (cli.encodes_while_decoding), here on the CPU: ask and chat answer as without it.
    from vilamp.modeling_vilamp.modeling_vilamp import VideoCacheFiller

    single, _ = json_run
    monkeypatch.setattr(cli, "encodes_while_decoding", lambda _model: True)
    kept, keep = [], VideoCacheFiller.keep

    def recording_keep(filler, key):  # the chunks each filler ran before the cache keeps them
        kept.append(len(filler.states))
        keep(filler, key)

    monkeypatch.setattr(VideoCacheFiller, "keep", recording_keep)
    monkeypatch.setattr(cli, "disable_library_progress_bars", lambda: None)  # --json would, for this whole process
    code, out, err = run_main(capfd, "ask", str(CLIP_PATH), "Who?", "What is the rabbit doing?", "--json")
    assert code == 0, err
    record = json.loads(out.splitlines()[1])
    unrelated = ("seconds", "plot")
    assert {k: v for k, v in record.items() if k not in unrelated} == {
        k: v for k, v in single.items() if k not in unrelated
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the rabbit doing?\nexit\n"))
    code, out, err = run_main(capfd, "chat", str(CLIP_PATH), "--quiet")
    assert code == 0, err
    assert re.findall(r"answer: (.*)$", out, flags=re.MULTILINE) == [single["answer"]]
    assert kept == [1, 1]  # each command ran the clip's 6 frames through the tower (one chunk of 8) as it decoded


def test_chat_answers_each_question_about_the_video_until_exit(json_run, capfd, monkeypatch):
    # Piped input, as `echo ... | vilamp chat` gives it; a terminal's is test_chat_ctrl_c_stops_an_answer_...
    single, _ = json_run
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the rabbit doing?\n\nWhere?\nexit\nNot asked?\n"))
    code, out, err = run_main(capfd, "chat", str(CLIP_PATH), "--quiet")
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == EMBEDDED_DEFAULT_NOTE
    assert lines[1] == f"{CLIP_PATH}: 6 frames sampled over 00:00:05. {cli.CHAT_HELP}"
    # Piped input is not echoed: each answer follows its prompt. The blank line asks nothing, and the streamed
    # answer equals `vilamp ask`'s.
    answers = re.findall(rf"^((?:{cli.CHAT_PROMPT})+)answer: (.*)$", out, flags=re.MULTILINE)
    assert answers[0] == (cli.CHAT_PROMPT, single["answer"])
    assert len(answers) == 2 and answers[1][0] == cli.CHAT_PROMPT * 2
    summaries = [line for line in lines if line.startswith("(keyframes at ")]
    assert len(summaries) == 2 and all("; 397 visual tokens; " in line for line in summaries)


def test_chat_ctrl_c_stops_an_answer_and_ctrl_d_leaves():
    import pty
    import select
    import signal
    import time

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(VILAMP), "chat", str(CLIP_PATH), "--quiet", "--max-new-tokens", "100000"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    output, cursor = b"", 0

    def read_until(text: bytes, timeout: float = 120) -> None:
        """Reads until `text` appears after the previous match; the next search starts after this one."""
        nonlocal output, cursor
        deadline = time.monotonic() + timeout
        while text not in output[cursor:]:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([leader], [], [], 1)[0]:
                output += os.read(leader, 4096)
        cursor = output.index(text, cursor) + len(text)

    try:
        read_until(cli.CHAT_PROMPT.encode())
        os.write(leader, b"What is the rabbit doing?\n")
        read_until(b"answer: ")
        time.sleep(1)  # well inside an answer of up to 100,000 tokens
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground processes
        read_until(b"(answer interrupted)")
        read_until(cli.CHAT_PROMPT.encode())
        time.sleep(0.5)  # readline takes the terminal once its prompt is out
        os.write(leader, b"\x04")  # Ctrl-D: the end of input, at the start of a line
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        os.close(leader)


def test_offline_a_name_that_is_no_directory_is_not_looked_up(capfd, monkeypatch, no_loading):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, _, err = run_main(capfd, "ask", str(CLIP_PATH), "--model", "someone/vilamp")
    assert code == 2
    assert (
        err == "vilamp: error: no such model directory: someone/vilamp (HF_HUB_OFFLINE is set: the Hub is not asked)\n"
    )


def test_tiny_saves_the_embedded_default_as_a_model_directory(json_run, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(cli, "disable_library_progress_bars", lambda: None)  # --json would, for this whole process
    # As the README types it, `vilamp tiny path/to/vilamp`: missing parents are made, as `vilamp convert` makes them.
    model_dir = tmp_path / "path" / "to" / "vilamp"
    code, out, _ = run_main(capfd, "tiny", str(model_dir))
    assert code == 0
    assert out == (
        f"{TINY_DESCRIPTION} in {model_dir}: give it wherever a model goes (--model {model_dir}, from_pretrained).\n"
    )
    # Loaded back, it answers as the embedded default does.
    code, out, err = run_main(
        capfd, "ask", str(CLIP_PATH), "What is the rabbit doing?", "--model", str(model_dir), "--json"
    )
    assert code == 0, err
    record, (embedded, _) = json.loads(out), json_run
    same = ("answer", "keyframes", "frames_sampled", "visual_tokens")
    assert {key: record[key] for key in same} == {key: embedded[key] for key in same}


def test_plot_is_a_png_of_sensible_size(json_run):
    _, plot = json_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        width, height = image.size
    assert image.format == "PNG" and width == 1200 and 400 <= height <= 1200


def ask_converted_model_arguments(model_dir: Path) -> list[str]:
    return ["ask", str(CLIP_PATH), "what?", "--model", str(model_dir), "--json", "--max-new-tokens", "3"]


def test_ask_with_a_converted_model_runs_none_of_its_shipped_code(converted_model, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("SHIPPED_CODE_RAN", str(tmp_path / "shipped-code-ran"))
    monkeypatch.setattr(cli, "disable_library_progress_bars", lambda: None)  # --json would, for this whole process
    code, out, err = run_main(capfd, *ask_converted_model_arguments(converted_model))
    assert code == 0, err
    record = json.loads(out)
    assert record["embedded_default"] is False and record["model"] == str(converted_model)
    assert len(record["keyframes"]) == 6  # every sampled frame: the clip has 6, the fixture's K is 8
    assert not (tmp_path / "shipped-code-ran").exists()


@pytest.mark.parametrize("which", ["embedded default", "converted model"])
def test_model_and_frame_scorer_are_both_put_on_the_device(which, converted_model):
    # "meta" stands in for an accelerator on a machine without one: it moves no data, only where tensors live.
    model_id = None if which == "embedded default" else str(converted_model)
    model, processor = cli.load_model_and_processor(model_id, torch.device("meta"), "float32")
    assert model.device.type == "meta"
    assert processor.frame_scorer.device.type == "meta"
    assert not model.training


def test_trust_remote_code_runs_the_shipped_code(converted_model, tmp_path):
    # A fresh process: the shipped code is imported as a module of its own, once per process.
    result = vilamp(
        *ask_converted_model_arguments(converted_model),
        "--trust-remote-code",
        env={"SHIPPED_CODE_RAN": str(tmp_path / "shipped-code-ran")},
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert len(record["keyframes"]) == 6
    assert (tmp_path / "shipped-code-ran").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["ask", "missing.mp4"], "no such video file: missing.mp4"),
        (["ask", "."], "not a video file: ."),
        (["ask", str(CLIP_PATH), "--model", "no/such/model"], "no such model directory, and not a Hub id: no/such"),
        (["ask", "--model", str(FIXTURES)], "VIDEO is required with --model"),
        (["ask", str(CLIP_PATH), ""], "the question is empty"),
        (["ask", str(CLIP_PATH), " \n\t"], "the question is empty"),
        (["ask", "--plot", "timeline.jpg"], "--plot writes a PNG"),
        (["ask", "--plot", "no-such-folder/timeline.png"], "--plot no-such-folder/timeline.png: no such directory"),
        (["convert", "--checkpoint", "missing-dir/x/y", "--output", "out"], "--checkpoint"),
        # A mistyped run directory (`runs/` exists here) or a name written as a path: no Hub lookup, no retries.
        (["ask", str(CLIP_PATH), "--model", "runs/ft2"], "no such model directory: runs/ft2"),
        (["ask", str(CLIP_PATH), "--model", "./nonexist"], "no such model directory: ./nonexist"),
        (["chat", str(CLIP_PATH), "--model", "./nonexist"], "no such model directory: ./nonexist"),
        (["chat", "missing.mp4"], "no such video file: missing.mp4"),
        (["tiny", "runs"], "runs already exists and is not an empty directory"),
        (["tiny", f"{CLIP_PATH}/tiny"], f"{CLIP_PATH}/tiny: cannot make this directory (Not a directory)"),
        (["serve", "--model", "./nonexist"], "no such model directory: ./nonexist"),
    ],
)
def test_mistakes_are_one_line_with_exit_code_2_before_any_loading(
    capfd, monkeypatch, no_loading, tmp_path, arguments, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "ft20").mkdir(parents=True)
    code, out, err = run_main(capfd, *arguments)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"vilamp: error: {message}"), err


def write_truncated_clip(folder: Path) -> Path:
    path = folder / "truncated.mp4"
    data = CLIP_PATH.read_bytes()
    path.write_bytes(data[: len(data) // 5])
    return path


def write_text_file(folder: Path) -> Path:
    path = folder / "not-a-video.mp4"
    path.write_text("this is not a video")
    return path


@pytest.mark.parametrize("make_file", [write_text_file, write_truncated_clip])
def test_undecodable_video_is_one_line_naming_it(capfd, tmp_path, make_file):
    video = make_file(tmp_path)
    code, out, err = run_main(capfd, "ask", str(video))  # progress bars on: nothing of the decoder's shows
    assert code == 2 and out == ""
    lines = err.splitlines()
    # The decoder's reason in our words (PyAV's), naming the file, and nothing the C libraries printed.
    assert len(lines) == 1 and re.match(rf"vilamp: error: Cannot (read|decode frames of) video {video}: .", lines[0])


def empty_directory(folder: Path) -> Path:
    return folder


def other_model_type(folder: Path) -> Path:
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
    return folder


def config_not_json(folder: Path) -> Path:
    (folder / "config.json").write_text("model_type = vilamp")
    return folder


@pytest.mark.parametrize(
    ("make_directory", "message"),
    [
        (empty_directory, "not a ViLAMP model directory (no config.json)"),
        (other_model_type, "not a ViLAMP model directory (its config.json is for model type 'bert')"),
        (config_not_json, "not a ViLAMP model directory (config.json is not a JSON object)"),
    ],
)
def test_model_directory_that_is_not_vilamp_is_one_line_naming_it(
    capfd, no_loading, tmp_path, make_directory, message
):
    directory = make_directory(tmp_path)
    code, _, err = run_main(capfd, "ask", str(CLIP_PATH), "--model", str(directory))
    assert code == 2 and err.splitlines() == [f"vilamp: error: {message}: {directory}"]


def test_model_directory_with_truncated_weights_is_one_line_naming_it(capfd, converted_model, tmp_path):
    directory = shutil.copytree(converted_model, tmp_path / "model")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = run_main(capfd, "ask", str(CLIP_PATH), "--model", str(directory))
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"vilamp: error: cannot load model {directory}: ")


def test_debug_shows_the_traceback_and_the_decoder_message(capfd, tmp_path):
    video = write_text_file(tmp_path)
    code, _, err = run_main(capfd, "ask", str(video), "--debug")
    assert code == 2 and "Traceback" in err and "CliError" in err
    assert "The above exception was the direct cause" in err  # the decoder's own error, chained
    assert err.splitlines()[-1].startswith(f"vilamp: error: Cannot read video {video}")


@pytest.mark.parametrize("option", ["--max-frames", "--keyframes", "--max-new-tokens"])
@pytest.mark.parametrize("value", ["0", "-3", "2.5", "ten", ""])
def test_bad_counts_are_usage_errors(capfd, option, value):
    code, out, err = run_main(capfd, "ask", option, value)
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == (
        f"vilamp ask: error: argument {option}: must be a whole number of at least 1, got {value!r}"
    )


def test_native_stderr_is_silenced_while_python_stderr_still_shows(capfd):
    with cli.native_stderr_silenced():
        os.write(2, b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5581] moov atom not found\n")  # as FFmpeg logs
        print("decoding and scoring frames: 100%", file=sys.stderr)  # as tqdm draws
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "decoding and scoring frames: 100%\nafter\n"
