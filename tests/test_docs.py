"""Every code sample in the README, docs/ and the model card runs, on a converted fixture and the bundled clip."""

import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import pytest

from conftest import CLIP_PATH, FIXTURES, PROJECT_ROOT
from vilamp.conversion.convert_vilamp_to_hf import convert_checkpoint


DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Set up by .ci/run itself (install), or this very test run: not run again from inside a test.
NOT_RUN_HERE = ("python3 -m venv", "pip install", "python -m pytest")


def code_samples(document: Path) -> list[tuple[str, str]]:
    return [(language, body) for language, body in FENCE.findall(document.read_text())]


def sample_ids(documents) -> list:
    return [
        pytest.param(document, index, id=f"{document.name}-{index}")
        for document in documents
        for index, _ in enumerate(code_samples(document))
    ]


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, str]:
    """What the samples' placeholders stand for here: a converted fixture checkpoint and the bundled clip."""
    converted = tmp_path_factory.mktemp("docs") / "converted"
    convert_checkpoint(FIXTURES / "heavy-fill", converted, dtype="float32", log=lambda _message: None)
    return {  # in order: a conversion's output is a new directory, not the prepared checkpoint
        "--output path/to/vilamp": "--output converted-here",
        "path/to/vilamp": str(converted),
        "orange-sk/ViLAMP-llava-qwen": str(FIXTURES / "heavy-fill"),
        "movie.mp4": str(CLIP_PATH),
        "clip.mp4": str(CLIP_PATH),
        # The benchmark's own command, at a size a test can afford, with one method: the `--size tiny-b32` sample
        # measures `vilamp`, and test_benchmarks.py all three, with the figures they must give.
        "--frames 1000,2500,5000,10000 --repeats 3": "--frames 4 --repeats 1 --methods dense-uniform",
        # One frame count; the per-frame figure from two is tested in test_benchmarks.py.
        "--frames 64,256,1024 --repeats 1": "--frames 2 --repeats 1",
        "--frames 300,1000,3000 --sizes 640x360,1280x720 --repeats 3": "--frames 3 --sizes 64x36 --repeats 1",
        "--frames 1000,10000 --repeats 1": "--frames 4 --repeats 1",
        # Results written here, not over the repository's.
        "--seconds 300 --questions 5 --repeats 3": "--seconds 2 --questions 2 --repeats 1 --output mq.json",
        "benchmarks.scorer_paths --compile": "benchmarks.scorer_paths --chunks 1 --chunk-size 2",
        "--seconds 300 --size 1280x720 --workers 2 --repeats 3": "--seconds 3 --size 64x36 --workers 2 --repeats 1",
    }


def substitute(code: str, standins: dict[str, str]) -> str:
    for placeholder, value in standins.items():
        code = code.replace(placeholder, value)
    return code


def run_sample(language: str, code: str, workdir: Path) -> None:
    if language == "python":
        previous = Path.cwd()
        os.chdir(workdir)
        try:
            exec(compile(code, "<doc sample>", "exec"), {"__name__": "__doc_sample__"})
        finally:
            os.chdir(previous)
        return
    commands = [line for line in code.replace("\\\n", " ").splitlines() if line.strip()]
    for command in commands:
        if not command.startswith(NOT_RUN_HERE):
            run_command(shlex.split(command), workdir)


def run_module_as_main(module: str, arguments: list[str]) -> None:
    """`python -m module arguments`, in this process."""
    previous = sys.argv
    sys.argv = [module, *arguments]
    try:
        with warnings.catch_warnings():
            # An earlier test may have imported the module; `python -m` in a fresh process would not have.
            warnings.filterwarnings("ignore", ".* found in sys.modules", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = previous


def without_memory_limit(arguments: list[str]) -> list[str]:
    """`arguments` less `--memory-limit-gb N`: the address-space cap cannot be lifted from a process once set."""
    if "--memory-limit-gb" not in arguments:
        return arguments
    index = arguments.index("--memory-limit-gb")
    return arguments[:index] + arguments[index + 2 :]


@contextmanager
def measurements_in_this_process():
    """
    The benchmark harnesses start `python -m benchmarks.<module> ...` for every measurement, so that its peak memory
    is its own; the samples here would start seven, each spending about 10 s importing torch and transformers.
    Within a sample they run in this process instead: the module as `__main__` with the same arguments (less the
    address-space cap), its stdout handed back for the harness to read as it reads a child's. A measurement in a
    process of its own is what the gpu_check smoke test (tests/test_benchmarks.py) starts, through the same
    `benchmarks.run.run_json_module`.
    """
    start_process = subprocess.run

    def run(command, *args, **kwargs):
        if command[:2] != [sys.executable, "-m"] or not command[2].startswith("benchmarks."):
            return start_process(command, *args, **kwargs)
        with redirect_stdout(io.StringIO()) as stdout:
            run_module_as_main(command[2], without_memory_limit(command[3:]))
        return subprocess.CompletedProcess(command, 0, stdout.getvalue(), "")

    subprocess.run = run
    try:
        yield
    finally:
        subprocess.run = start_process


def run_command(words: list[str], workdir: Path) -> None:
    """
    A sample's `vilamp ...` or `python -m MODULE ...` line, run in this process as the shell would run it: `vilamp`
    through the console script's function, `python -m` through runpy, and a benchmark's measurements as well
    (`measurements_in_this_process`). A fresh Python would spend about 10 s here importing torch and transformers
    again for each; tests/test_cli.py runs the console script itself.
    """
    from transformers.utils import logging

    from vilamp import cli

    previous = (Path.cwd(), sys.argv, os.environ.copy(), logging.is_progress_bar_enabled())
    os.chdir(workdir)
    try:
        try:
            if words[0] == "vilamp":
                sys.argv = words
                code = cli.main(words[1:])
            else:
                assert words[:2] == ["python", "-m"], f"a sample line this test does not know how to run: {words}"
                with measurements_in_this_process():
                    run_module_as_main(words[2], words[3:])
                code = 0
        except SystemExit as exit_:  # argparse's usage errors, and modules that end with sys.exit
            code = exit_.code
        assert code in (0, None), f"{shlex.join(words)} exited with {code}"
    finally:
        os.chdir(previous[0])
        sys.argv = previous[1]
        os.environ.clear()
        os.environ.update(previous[2])
        if previous[3]:
            logging.enable_progress_bar()  # --quiet and --json turn transformers' bars off for the process


@pytest.mark.parametrize(("document", "index"), sample_ids(DOCUMENTS))
def test_documentation_sample_runs(document, index, standins, tmp_path):
    language, code = code_samples(document)[index]
    run_sample(language, substitute(code, standins), tmp_path)


def test_model_card_samples_run(standins, tmp_path):
    card = Path(standins["path/to/vilamp"]) / "README.md"
    samples = code_samples(card)
    assert [language for language, _ in samples] == ["python", "bash"]
    for language, code in samples:
        run_sample(language, substitute(code, standins), tmp_path)
