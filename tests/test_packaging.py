"""The installed package: one top-level name, imports that work from the wheel, and a command that answers at once."""

import subprocess
import sys
import textwrap
import zipfile

import pytest

from conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The project's wheel, built offline with the installed setuptools."""
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            directory,
            PROJECT_ROOT,
        ],
        check=True,
        capture_output=True,
    )
    return next(directory.glob("vilamp_transformers-*.whl"))


def test_wheel_installs_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"vilamp"}
    for part in ("modeling_vilamp/modeling_vilamp.py", "processing/processing_vilamp.py", "conversion/arguments.py"):
        assert f"vilamp/{part}" in names
    assert "vilamp/assets/bigbuckbunny.mp4" in names


def test_a_users_own_processing_package_and_ours_live_side_by_side(wheel, tmp_path, heavy_fill_processor):
    """In a folder with its own `processing/`, `import processing` is the user's and AutoProcessor finds ours."""
    heavy_fill_processor.save_pretrained(tmp_path / "saved")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    project = tmp_path / "project"
    (project / "processing").mkdir(parents=True)
    (project / "processing" / "__init__.py").write_text("OWNER = 'the user'\n")
    script = textwrap.dedent(
        f"""
        import os, sys
        # Only the wheel's copy: not this checkout, not its editable install.
        sys.path = [p for p in sys.path if os.path.abspath(p or ".") != {str(PROJECT_ROOT)!r}]
        sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
        sys.path.insert(1, {str(site)!r})

        import processing
        assert processing.OWNER == "the user", processing.__file__

        import vilamp.processing
        from transformers import AutoProcessor
        assert vilamp.processing.__file__.startswith({str(site)!r}), vilamp.processing.__file__
        loaded = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r})  # no trust_remote_code needed
        assert type(loaded).__module__ == "vilamp.processing.processing_vilamp", type(loaded).__module__
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, text=True, env={"PYTHONPATH": ""}
    )
    assert result.returncode == 0, result.stderr


def test_the_command_answers_before_importing_anything_heavy(tmp_path):
    """`vilamp --help` and a mistyped argument need neither torch nor transformers (15 s and 21 s once)."""
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        from vilamp.cli import main

        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            code = main(["ask", "missing.mp4"])
        assert code == 2 and "no such video file: missing.mp4" in stderr.getvalue(), stderr.getvalue()
        with contextlib.redirect_stdout(io.StringIO()) as stdout, contextlib.suppress(SystemExit):
            main(["--help"])
        assert "usage: vilamp" in stdout.getvalue()
        heavy = sorted(name for name in ("torch", "transformers", "av", "numpy", "open_clip") if name in sys.modules)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
