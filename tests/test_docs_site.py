"""The docs site builds with `mkdocs build --strict` (a broken link, a missing anchor or a missing API reference
fails), and its generated references cover every config field and every registered task, so they cannot drift."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_settings import CONFIG_FIELDS

from unified.task_zoo import list_tasks

pytestmark = pytest.mark.slow  # imports the whole package and renders the API reference (~30 s)

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocs_gen_files", reason="the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def text_of(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_every_config_field_is_in_the_reference(site):
    page = text_of(site / "reference" / "configuration" / "index.html")
    missing = [key for key, f in CONFIG_FIELDS if key not in page or f.metadata["doc"].replace("`", "") not in page]
    assert not missing, f"not in the generated configuration reference: {missing}"
    assert "\\{" not in page and "\\|" not in page, "an escape meant for Markdown shows on the page"


def test_every_task_is_in_the_reference(site):
    page = text_of(site / "reference" / "tasks" / "index.html")
    assert f"The {len(list_tasks())} registered tasks" in page
    for name in list_tasks():
        assert f"{name}\n" in page or f"{name}¶" in page, name


def test_the_api_reference_is_rendered(site):
    page = (site / "reference" / "api" / "index.html").read_text()
    for name in ("unified.api.Model.generate", "unified.task_zoo.base.Task", "unified.errors.ConfigError",
                 "unified.training.load_config"):
        assert f'id="{name}"' in page, name
