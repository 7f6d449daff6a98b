import subprocess
import sys

from unified.cli import main


def test_demo_runs_every_task_on_a_fresh_clip(tmp_path, capsys):
    """The demo runs the built-in default model (or, in an installation without one, trains a stand-in for a few
    steps); every task with synthetic rows answers, the truths printed are the ones written with the clip, and the
    picture is the frames plus the grounding frame."""
    import json

    from PIL import Image

    from unified.task_zoo import list_tasks

    assert main(["demo", "--out", str(tmp_path), "--train-steps", "3", "--seed", "11"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "demo.json").read_text())
    # every task the synthetic world writes rows for (the self-supervised ones learn from other data)
    assert [r[0] for r in report["rows"]] == [t for t in list_tasks() if (tmp_path / "clip" / f"{t}.jsonl").is_file()]
    from unified.api import DEFAULT_MODEL_DIR

    expected = ("the built-in default model" if (DEFAULT_MODEL_DIR / "config.json").is_file()
                else "tiny preset trained here for 3 steps")
    assert report["model"] == expected and expected in out
    written = json.loads((tmp_path / "clip" / "vqa.jsonl").read_text().splitlines()[0])
    assert next(r for r in report["rows"] if r[0] == "vqa")[3] == written["answer"]
    scene = json.loads((tmp_path / "clip" / "scenes.jsonl").read_text())
    assert scene["clip_id"].startswith("test_11_")
    # the strip shows the clip itself: every frame, decoded here on its own, sits pixel for pixel in its tile
    import numpy as np

    from unified.demo import PAD, SCALE
    from unified.media import load_video

    frames = load_video(next((tmp_path / "clip" / "clips").glob("*.mp4")), fps=None, num_frames=8).frames.numpy()
    with Image.open(tmp_path / "demo.png") as png:
        picture = np.asarray(png.convert("RGB"))
    side = frames.shape[1] * SCALE
    for t, frame in enumerate(frames):
        x = PAD + t * (side + PAD)
        tile = picture[PAD:PAD + side, x:x + side]
        assert np.array_equal(tile[::SCALE, ::SCALE], frame), t


def test_unknown_command_exits_2():
    bad = subprocess.run([sys.executable, "-m", "unified.cli", "nope"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_tasks_lists_every_builtin(capsys):
    import json

    from unified.task_zoo import list_tasks

    assert main(["tasks", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in described] == list_tasks()
    assert main(["tasks"]) == 0
    assert "temporal_grounding" in capsys.readouterr().out


def test_synth_then_eval_then_generate(tmp_path, capsys):
    import json

    from task_rows import tiny_stack

    assert main(["data", "synth", "--out", str(tmp_path / "data"), "--n", "3", "--seed", "9", "--split", "test"]) == 0
    assert (tmp_path / "data" / "video_mcqa.jsonl").is_file()
    _, processor, model = tiny_stack()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    capsys.readouterr()
    code = main(["eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--tasks",
                 "classify", "grounding", "--max-rows", "2", "--ablate", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["metrics"]) == {"classify", "grounding"} and 0 <= result["integral"] <= 1
    assert set(result["ablation"]) == {"full", "one_frame", "no_audio", "no_media"}
    clip = json.loads((tmp_path / "data" / "classify.jsonl").read_text().splitlines()[0])["video"]
    code = main(["generate", "--model", str(tmp_path / "model"), "--task", "classify", "--video",
                 str(tmp_path / "data" / clip), "--labels", "left", "right", "up", "down", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out) in ["left", "right", "up", "down"]


def test_user_mistakes_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("unified: error: ")
