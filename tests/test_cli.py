import subprocess
import sys

from unified.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "demo.mp4").is_file()
    # truths written into the clip: 24 frames at 8 fps (3 s) -> 6 frames at 2 fps; a 440 Hz tone
    assert "frames (6, 96, 128, 3)" in out
    assert "peak 440 Hz" in out
    assert "pixel_values (1, 1, 6, 3, 64, 64)" in out


def test_unknown_command_exits_2():
    bad = subprocess.run([sys.executable, "-m", "unified.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
