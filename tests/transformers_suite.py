"""
transformers' own common tests (`ProcessorTesterMixin`, `VideoProcessingTestMixin`, `ModelTesterMixin`, ...), from the
source distribution of the installed transformers release. They are not in its wheel and are not copied here: the
first use downloads the release's sdist from PyPI (about 11 MB, once) and keeps its top-level `tests/*.py` in
`.cache/` at the project root.
"""

import importlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The mixins import this helper from transformers' repository (not shipped in the sdist) to map test-fixture URLs on
# the Hub to local copies in transformers' own CI. Here the URLs stay URLs; tests that need them cannot run offline.
HUB_FIXTURES_STANDIN = "def url_to_local_path(url, **kwargs):\n    return url\n"


def transformers_tests_dir() -> Path:
    """The directory holding the installed release's `tests/*.py`, downloaded on first use."""
    version = transformers.__version__
    root = PROJECT_ROOT / ".cache" / f"transformers-{version}"
    tests = root / "tests"
    if not (tests / "test_processing_common.py").is_file():
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
                + ["--no-deps", "--quiet", "--dest", download],
                check=True,
            )
            with tarfile.open(next(Path(download).glob("transformers-*.tar.gz"))) as archive:
                prefix = f"transformers-{version}/tests/"
                members = [m for m in archive.getmembers() if m.name.startswith(prefix) and m.name.count("/") == 2]
                for member in members:
                    member.name = member.name[len(f"transformers-{version}/") :]
                archive.extractall(root, members=members, filter="data")
        (root / "utils").mkdir(exist_ok=True)
        (root / "utils" / "fetch_hub_objects_for_ci.py").write_text(HUB_FIXTURES_STANDIN)
    return tests


def import_common_tests(module: str):
    """Imports one of transformers' common test modules, e.g. `test_processing_common`."""
    tests = str(transformers_tests_dir())
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(module)
