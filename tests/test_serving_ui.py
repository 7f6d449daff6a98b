"""`unified ui`: the Gradio page driven through `gradio_client` (Gradio's own client) for two tasks, answers equal
to `Model.generate`'s, and the page loaded in headless Chromium (Debian's `chromium`), whose rendered DOM lists the
model's tasks; its screenshot is written for the docs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from serving_fixtures import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="the page needs the ui extra")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with the dev extra")

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from unified import Model
    from unified.data import load_data_dir
    from unified.data.synthetic import write_split
    from unified.serving.ui import build_page

    root = tmp_path_factory.mktemp("ui")
    write_split(root, 1, seed=7, split="test", progress=False)
    data, _ = load_data_dir(root, None)
    model = Model.default()
    blocks = build_page(model, name="shapes")
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield {"url": f"http://127.0.0.1:{port}/", "data": data, "model": model, "root": root}
    blocks.close()


def test_gradio_client_answers_two_tasks(page):
    from gradio_client import Client, handle_file

    client = Client(page["url"], verbose=False)
    model, data = page["model"], page["data"]
    row = data["grounding"][0]
    drawn, text, typed, score, frames = client.predict("grounding", handle_file(row["image"]), None, None,
                                                       json.dumps({"phrase": row["phrase"]}), api_name="/answer")
    expected = model.generate(task="grounding", image=row["image"], phrase=row["phrase"], return_score=True)
    assert typed["type"] == "box" and typed["value"] == pytest.approx(list(expected.answer))
    assert score == pytest.approx(expected.score, abs=1e-4) and os.path.exists(drawn)
    assert len(frames) == 1  # the image itself
    row = data["video_mcqa"][0]
    _, text, typed, _, frames = client.predict(
        "video_mcqa", None, handle_file(row["video"]), None,
        json.dumps({"question": row["question"], "options": row["options"]}), api_name="/answer")
    assert text == model.generate(task="video_mcqa", video=row["video"], question=row["question"],
                                  options=row["options"])
    assert typed["index"] == row["options"].index(text)
    video = model.processor.video(row["video"], "video_mcqa")
    assert [f["caption"] for f in frames] == [f"t = {float(t):.2f} s" for t in video.timestamps]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make chromium)")
def test_page_in_headless_chromium(page, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--window-size=1280,1500"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page["url"]], capture_output=True, text=True, check=False,
                         timeout=120).stdout
    for name in page["model"].task_options:
        assert name in dom, name
    shot = tmp_path / "ui.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", page["url"]], capture_output=True, timeout=120,
                   check=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("UNIFIED_UI_SCREENSHOT"):  # the docs' picture: UNIFIED_UI_SCREENSHOT=docs/images/ui.png
        shutil.copy(shot, os.environ["UNIFIED_UI_SCREENSHOT"])
