"""`unified ui`: a web page to try a model (Gradio), built from the task protocol, so a plug-in task appears on it
with no edit here.

    task (the model's tasks) + image / video / audio + the task's fields (one box each, shown for the tasks that
    take it; lists and numbers as JSON) --`prepare_row`, `predict`--> the answer drawn (a box on the frame, a span
    on the clip's timeline, the chosen option among the others, numbers or text), its typed JSON and score, and
    the frames the processor sampled with their timestamps.

The same function is an API endpoint for `gradio_client`: `client.predict(task, image, video, audio, fields_json,
api_name="/answer")`. Gradio's analytics are off. Gradio is the `ui` extra (`pip install unified[ui]`).

    >>> build_page(Model.default(), name="default").launch(server_name="127.0.0.1", server_port=7860)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from unified.errors import InputError
from unified.media import load_image
from unified.serving.engine import prepare_row
from unified.task_zoo import build_tasks, list_tasks
from unified.task_zoo.base import MODALITIES
from unified.task_zoo.decoding import predict

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

WIDTH = 480  # px of the drawn answer


class Page:
    """The page's logic apart from Gradio: answer a task from uploaded media and fields, and draw it."""

    def __init__(self, model: Any, name: str):
        self.model, self.name = model, name
        names = list(model.task_options) or list_tasks()  # a model saved without its task list: every task
        self.tasks = build_tasks(names, model.task_options, model.processor.tokenizer.layout)
        self.fields = sorted({f for t in self.tasks.values() for f in t.input_fields - set(t.derived_fields)})

    def table(self) -> str:
        """Markdown: one line per task with its media, fields and answer."""
        lines = [f"### {self.name}: {len(self.tasks)} tasks", "", "| task | media | fields | answer |",
                 "|---|---|---|---|"]
        for name, task in sorted(self.tasks.items()):
            fields = sorted(task.input_fields - set(task.derived_fields))
            lines.append(f"| {name} | {', '.join(sorted(task.accepts)) or 'text'} | {', '.join(fields) or '-'} | "
                         f"{task.answer_json(None, {})['type']} |")
        return "\n".join(lines)

    def answer(self, task_name: str, image: Any, video: Any, audio: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """{"text", "answer", "score", "drawn" (an image), "frames" [(image, caption)]}; `InputError` if bad."""
        if task_name not in self.tasks:
            raise InputError("task", task_name, f"not a task of this model: {sorted(self.tasks)}")
        task = self.tasks[task_name]
        given = {"image": image, "video": video, "audio": audio, **fields}
        row, item = prepare_row(task, {k: v for k, v in given.items() if v not in (None, "")}, self.model.processor)
        details: list = []
        value = predict(task, self.model.network, self.model.processor, [row], items=[item], details=details)[0]
        typed = task.answer_json(value, row)
        frames = self.frames(task, row)
        return {"text": task.show(value), "answer": typed, "score": details[0]["score"],
                "drawn": draw(typed, row, frames), "frames": frames}

    def frames(self, task: Any, row: dict[str, Any]) -> list[tuple[np.ndarray, str]]:
        """The frames the processor samples for this task, with their timestamps (an image: itself)."""
        if row.get("video") is not None:
            video = self.model.processor.video(row["video"], task.name)
            return [(f.numpy(), f"t = {float(t):.2f} s") for f, t in zip(video.frames, video.timestamps)]
        if row.get("image") is not None:
            return [(np.asarray(load_image(row["image"])), "image")]
        return []


def draw(typed: dict[str, Any], row: dict[str, Any], frames: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """The answer as a picture: a box on the frame, a span on the clip's timeline, the options with the chosen
    one marked, or the answer's text."""
    kind, value = typed["type"], typed["value"]
    if kind == "box" and frames and value is not None:
        frame = Image.fromarray(frames[0][0])
        scale = WIDTH / frame.width
        canvas = frame.resize((WIDTH, round(frame.height * scale)), Image.NEAREST)
        x1, y1, x2, y2 = (float(v) * scale for v in value[:4])
        ImageDraw.Draw(canvas).rectangle((x1, y1, x2, y2), outline=(230, 40, 40), width=3)
        return np.asarray(canvas)
    canvas = Image.new("RGB", (WIDTH, 120), "white")
    pen = ImageDraw.Draw(canvas)
    if kind == "span" and value is not None and row.get("duration"):
        duration = float(row["duration"])
        left, right = 20, WIDTH - 20
        def x(t):
            return left + (right - left) * min(max(t / duration, 0.0), 1.0)
        pen.line((left, 60, right, 60), fill="black", width=2)
        pen.rectangle((x(value[0]), 45, x(value[1]), 75), fill=(230, 40, 40))
        for _, caption in frames:  # the sampled frames' times
            t = float(caption.split("=")[1].split()[0]) if "=" in caption else 0.0
            pen.line((x(t), 80, x(t), 90), fill=(60, 60, 60))
        pen.text((left, 95), f"0 s ... {duration:.2f} s; answer {value[0]:.2f}-{value[1]:.2f} s", fill="black")
        return np.asarray(canvas)
    if kind == "option" and typed.get("field") in row:
        options = [str(o) for o in row[typed["field"]]]
        canvas = Image.new("RGB", (WIDTH, 24 * len(options) + 16), "white")
        pen = ImageDraw.Draw(canvas)
        for i, option in enumerate(options):
            chosen = i == typed.get("index")
            pen.text((16, 8 + 24 * i), f"{'>' if chosen else ' '} {option}", fill=(230, 40, 40) if chosen else "grey")
        return np.asarray(canvas)
    text = json.dumps(value) if not isinstance(value, str) else value
    if kind == "embedding":
        text = f"embedding of {len(value)} numbers"
    pen.text((16, 50), text[:70], fill="black")
    return np.asarray(canvas)


def _parse_field(text: str) -> Any:
    """A field box's text: JSON when it reads as JSON (a list, a number), else the text itself."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def build_page(model: Any, name: str = "unified"):
    """The Gradio Blocks page for `model`."""
    import gradio as gr

    page = Page(model, name)
    first = min(page.tasks)

    def run(task_name, image, video, audio, fields_json):
        try:
            fields = json.loads(fields_json or "{}")
            if not isinstance(fields, dict):
                raise InputError("fields", fields_json, "expected a JSON object")
            out = page.answer(task_name, image, video, audio, fields)
        except (InputError, json.JSONDecodeError) as err:
            raise gr.Error(str(err)) from None
        return out["drawn"], out["text"], out["answer"], out["score"], out["frames"]

    def run_boxes(task_name, image, video, audio, *texts):
        task = page.tasks[task_name]
        wanted = task.input_fields - set(task.derived_fields)
        fields = {f: _parse_field(t) for f, t in zip(page.fields, texts) if f in wanted and t not in (None, "")}
        return run(task_name, image, video, audio, json.dumps(fields))

    def show_inputs(task_name):
        task = page.tasks[task_name]
        wanted = task.input_fields - set(task.derived_fields)
        media = [gr.update(visible=m in task.accepts) for m in MODALITIES]
        return [*media, *(gr.update(visible=f in wanted) for f in page.fields)]

    with gr.Blocks(title=f"unified: {name}") as blocks:
        gr.Markdown(page.table(), elem_id="tasks")
        with gr.Row():
            with gr.Column():
                task_box = gr.Dropdown(sorted(page.tasks), value=first, label="task")
                image = gr.Image(type="filepath", label="image")
                video = gr.Video(label="video")
                audio = gr.Audio(type="filepath", label="audio")
                boxes = [gr.Textbox(label=f, placeholder="text, or JSON for a list / number") for f in page.fields]
                button = gr.Button("Answer", variant="primary")
                fields_json = gr.Textbox(visible=False)
                api_button = gr.Button(visible=False)
            with gr.Column():
                drawn = gr.Image(label="answer, drawn")
                text = gr.Textbox(label="answer")
                typed = gr.JSON(label="typed answer")
                score = gr.Number(label="score (mean token log-probability)")
                frames = gr.Gallery(label="frames the processor sampled", columns=4)
        outputs = [drawn, text, typed, score, frames]
        task_box.change(show_inputs, task_box, [image, video, audio, *boxes])
        blocks.load(show_inputs, task_box, [image, video, audio, *boxes])
        button.click(run_boxes, [task_box, image, video, audio, *boxes], outputs, api_name="answer_fields")
        api_button.click(run, [task_box, image, video, audio, fields_json], outputs, api_name="answer")
    return blocks


def launch(model: Any, *, name: str = "unified", host: str = "127.0.0.1", port: int = 7860):
    """Serve the page until interrupted."""
    build_page(model, name).launch(server_name=host, server_port=port, show_error=True)
