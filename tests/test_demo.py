"""The README's main command: `python -m vilamp.demo` on the embedded default."""

import re
import subprocess
import sys


def test_demo_runs_on_embedded_default():
    result = subprocess.run([sys.executable, "-m", "vilamp.demo"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NOTE: embedded default = tiny random-weight model")
    assert "frames sampled: 6 (about 1 per second)" in lines
    keyframes = [line for line in lines if line.startswith("keyframe")]
    assert len(keyframes) == 2 and all(re.search(r"at 00:00:0[0-5]$", line) for line in keyframes)
    # 2 keyframes x 196 + 4 merged frames + 1 newline, against 6 x 196 + 1 for uniform pooling.
    assert "visual tokens: 397 (uniform 196 per frame would be 1177)" in lines
