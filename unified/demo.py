"""`unified demo`: one synthetic clip through every built-in task, answers next to the truth, and a picture.

    unified demo [--out DIR] [--model PATH] [--seed N]

1. Writes a fresh clip of the synthetic world (`unified.data.synthetic`, test split, seed N) to `DIR/clip/`: an mp4
   with its beep, the grounding frame as a PNG, and one row per task with the truth.
2. Takes the model: `--model PATH`, else the built-in default model when this installation has one, else it trains
   the tiny preset for `train_steps` steps on the synthetic world (about a minute on a laptop CPU) and says so.
3. Asks every registered task about the clip through `Model.generate` and prints task, question, answer and truth.
4. Saves `DIR/demo.png`: the clip's frames, the grounding frame with the true box (green) and the predicted one (red),
   and the predicted and true captions under them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from unified.api import DEFAULT_MODEL_DIR, Model
from unified.data import load_data_dir
from unified.data.scene import FPS
from unified.data.synthetic import write_split
from unified.media import load_image, load_video
from unified.task_zoo import build_tasks, list_tasks
from unified.training import load_config, train

TRAIN_STEPS = 300
SCALE, PAD = 2, 6  # the picture: each frame shown at 2x, 6 px apart


def _model(model_path: str | Path | None, out: Path, train_steps: int, log) -> tuple[Any, str]:
    if model_path is not None:
        return Model.from_pretrained(model_path), f"model from {model_path}"
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return Model.default(), "the built-in default model"

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-smoke.yaml"
    overrides = [f"output_dir={out / 'model'}", "data.synthetic={n_train: 200, n_eval: 0, seed: 0}",
                 f"optim.max_steps={train_steps}", "checkpoint.every=100000", "log_with=none"]
    if config.is_file():
        cfg = load_config(config, overrides)
    else:  # installed as a wheel: the same settings without the file
        cfg = load_config(None, ["model.preset=tiny", "processor.image_size=32", "optim.lr=0.003",
                                 "optim.batch_size=8", "optim.warmup_steps=10", *overrides])
    log(f"no default model in this installation: training the tiny preset for {train_steps} steps "
        f"(a stand-in to show the whole path; its answers are not the default model's)")
    train(cfg, progress=True)
    return Model.from_pretrained(out / "model" / "final"), f"tiny preset trained here for {train_steps} steps"


def run_demo(out_dir: str | Path | None = None, model_path: str | Path | None = None, seed: int = 7,
             train_steps: int = TRAIN_STEPS, log=print) -> dict[str, Any]:
    """Run the demo; returns {"rows": [(task, question, answer, truth)], "png": path, "model": description}."""
    out = Path(out_dir or tempfile.mkdtemp(prefix="unified-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_split(out / "clip", 1, seed=seed, split="test", progress=False)
    data, _ = load_data_dir(out / "clip", None)
    model, described = _model(model_path, out, train_steps, log)

    table, answers = [], {}
    known = model.task_options  # the tasks the model was trained on (older saves: unknown, so every task)
    names = [name for name in list_tasks() if name in data and (not known or name in known)]
    tasks = build_tasks(names, {n: o for n, o in model.task_options.items() if n in names},
                        model.processor.tokenizer.layout)
    for name, task in tasks.items():
        row = data[name][0]
        answer = model.generate(task=name, **task.inputs(row))
        answers[name] = (task, answer, row)
        question, truth = task.show_row(row)
        table.append((name, question, task.show(answer), truth))
    png = _picture(out, answers)
    widths = [max(len(r[i]) for r in [("task", "question", "answer", "truth"), *table]) for i in range(4)]
    widths[1] = min(widths[1], 60)
    lines = [f"clip: {out / 'clip' / 'clips'} (seed {seed}); model: {described}"]
    for r in [("task", "question", "answer", "truth"), *table]:
        lines.append("  ".join(f"{c[:60] if i == 1 else c:<{widths[i]}}" for i, c in enumerate(r)))
    lines.append(f"picture: {png}; {time.perf_counter() - started:.1f} s")
    log("\n".join(lines))
    (out / "demo.json").write_text(json.dumps({"model": described, "rows": table}, indent=2))
    return {"rows": table, "png": png, "model": described}


def _picture(out: Path, answers: dict[str, tuple]) -> Path:
    """The frames in a strip; the first image task with a box answer (grammar "loc"), its frame with both boxes;
    under them the answer and truth of the first task that describes the clip unasked (grammar "text", every
    field a target)."""
    from PIL import Image, ImageDraw

    clip = next((out / "clip" / "clips").glob("*.mp4"))
    frames = load_video(clip, fps=FPS).frames.numpy()  # (T, H, W, 3), every frame the clip has
    scale, pad = SCALE, PAD
    T, H, W = frames.shape[:3]
    tile = (W * scale, H * scale)
    canvas = Image.new("RGB", ((T + 1) * (tile[0] + pad) + pad, tile[1] + 2 * pad + 60), "white")
    for t, frame in enumerate(frames):
        canvas.paste(Image.fromarray(frame).resize(tile, Image.NEAREST), (pad + t * (tile[0] + pad), pad))
    draw = ImageDraw.Draw(canvas)
    boxed = next((a for a in answers.values() if a[0].grammar == "loc" and a[2].get("image") is not None), None)
    described = next((a for a in answers.values() if a[0].grammar == "text"
                      and set(a[0].row_fields) <= set(a[0].target_fields)), None)
    if boxed is not None:
        task, predicted, row = boxed
        truth = task.truth(row)
        image = load_image(row["image"])
        gx = pad + T * (tile[0] + pad)
        canvas.paste(Image.fromarray(np.asarray(image)).resize(tile, Image.NEAREST), (gx, pad))
        for box, colour in ((truth, (40, 200, 60)), (predicted, (230, 40, 40))):
            if box is not None:
                x1, y1, x2, y2 = (float(v) * scale for v in box)
                draw.rectangle((gx + x1, pad + y1, gx + x2, pad + y2), outline=colour, width=2)
        draw.text((gx, tile[1] + pad + 2), f"box: {task.show_row(row)[0]}", fill="black")
    if described is not None:
        task, predicted, row = described
        draw.text((pad, tile[1] + 2 * pad + 10), f"predicted: {task.show(predicted)}", fill=(230, 40, 40))
        draw.text((pad, tile[1] + 2 * pad + 30), f"true:      {task.show_row(row)[1]}", fill=(40, 140, 60))
    path = out / "demo.png"
    canvas.save(path)
    return path

