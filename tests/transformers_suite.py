"""
transformers' own common tests (`ProcessorTesterMixin`, `VideoProcessingTestMixin`, `ModelTesterMixin`, ...), from the
source distribution of the installed transformers release. They are not in its wheel and are not copied here: the
first use downloads the release's sdist from PyPI (about 11 MB, once) and keeps its top-level `tests/*.py` in
`.cache/` at the project root, as the package `transformers_tests` (their relative imports need one).

The sdist ships only the top-level files. `test_modeling_common.py` imports two mixins from subfolders that are not in
it: `ExportTesterMixin` (torch.export checks, which ModelTesterMixin inherits) and `GenerationTesterMixin`. They are
stood in by empty classes, so the export and generation suites do not run from here; generation is tested in
test_modeling_vilamp.py. Set `TRANSFORMERS_TESTS_DIR` to a transformers checkout's `tests/` folder of the same
release to run the complete mixins instead.
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers
from filelock import FileLock


PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The mixins import this helper from transformers' repository (not shipped in the sdist) to map test-fixture URLs on
# the Hub to local copies in transformers' own CI. Here the URLs stay URLs; tests that need them cannot run offline.
HUB_FIXTURES_STANDIN = "def url_to_local_path(url, **kwargs):\n    return url\n"
MISSING_FROM_SDIST = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
}
PACKAGE = "transformers_tests"


def transformers_tests_dir() -> Path:
    """The package folder holding the installed release's `tests/*.py`, downloaded on first use."""
    if os.environ.get("TRANSFORMERS_TESTS_DIR"):
        return Path(os.environ["TRANSFORMERS_TESTS_DIR"]).resolve()
    version = transformers.__version__
    root = PROJECT_ROOT / ".cache" / f"transformers-{version}"
    tests = root / PACKAGE
    root.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers (pytest -n) all come here first: one downloads, the others wait for it.
    with FileLock(f"{root}.lock"):
        if not (tests / "test_modeling_common.py").is_file():
            download_common_tests(version, root, tests)
    return tests


def download_common_tests(version: str, root: Path, tests: Path) -> None:
    """Unpacks release `version`'s top-level `tests/*.py` from its sdist into `tests` (a folder of `root`)."""
    with tempfile.TemporaryDirectory() as download:
        # pip prepares the sdist's metadata; with the setuptools of this environment (the test extra) rather than
        # one it installs into an isolated environment first, the download takes 5 s instead of 9 s.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
            + ["--no-deps", "--no-build-isolation", "--quiet", "--dest", download],
            check=True,
        )
        with tarfile.open(next(Path(download).glob("transformers-*.tar.gz"))) as archive:
            prefix = f"transformers-{version}/tests/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix) and m.name.count("/") == 2]
            for member in members:
                member.name = f"{PACKAGE}/{member.name[len(prefix) :]}"
            archive.extractall(root, members=members, filter="data")
    for relative, text in {"__init__.py": "", **MISSING_FROM_SDIST}.items():
        (tests / relative).parent.mkdir(exist_ok=True)
        (tests / relative).parent.joinpath("__init__.py").touch()
        (tests / relative).write_text(text)
    (root / "utils").mkdir(exist_ok=True)
    (root / "utils" / "fetch_hub_objects_for_ci.py").write_text(HUB_FIXTURES_STANDIN)


def import_common_tests(module: str):
    """Imports one of transformers' common test modules, e.g. `test_processing_common`."""
    tests = transformers_tests_dir()
    if str(tests.parent) not in sys.path:
        sys.path.insert(0, str(tests.parent))
    return importlib.import_module(f"{tests.name}.{module}")
