"""Every code sample in the README, docs/ and the model card runs, on a converted fixture and the bundled clip."""

import os
import re
import shlex
import subprocess
import sys
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
        # The benchmark's own command, at a size a test can afford.
        "--frames 1000,2500,5000,10000 --repeats 3": "--frames 30 --repeats 1",
        "--frames 64,256,1024 --repeats 1": "--frames 2,4 --repeats 1",
        "--frames 300,1000,3000 --sizes 640x360,1280x720 --repeats 3": "--frames 3 --sizes 64x36 --repeats 1",
        "--frames 1000,10000 --repeats 1": "--frames 30 --repeats 1",
        # Results written here, not over the repository's.
        "--seconds 300 --questions 5 --repeats 3": "--seconds 2 --questions 2 --repeats 1 --output mq.json",
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
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(PROJECT_ROOT),  # benchmarks/ is run from a checkout, not installed
    }
    for command in commands:
        if command.startswith(NOT_RUN_HERE):
            continue
        words = shlex.split(command)
        if words[0] == "python":
            words[0] = sys.executable
        result = subprocess.run(words, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr}"


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
