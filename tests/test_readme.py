"""The README's and the docs' code is real code: every Python block runs, page by page, top to bottom in one
namespace per page, in a folder holding the files the blocks name. A block that needs what a test cannot have (a
server, real pretrained checkpoints, a long run) is marked with `<!-- not run: reason -->` on the line above it."""

from __future__ import annotations

import contextlib
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from unified.task_zoo import registry

pytestmark = pytest.mark.slow  # runs every block of every page, two short training runs included

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")


def blocks(page: Path) -> list[tuple[str, str | None]]:
    """(code, why it is not run or None) of each fenced Python block of `page`."""
    text = page.read_text()
    found = []
    for match in re.finditer(r"```python\n(.*?)```", text, flags=re.DOTALL):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = NOT_RUN.search(before)
        found.append((textwrap.dedent(match.group(1)), skip.group(1) if skip else None))
    return found


def test_the_docs_have_examples_and_every_skip_says_why():
    assert sum(len(blocks(p)) for p in PAGES) >= 15
    for page in PAGES:
        for line in page.read_text().splitlines():
            if line.strip().startswith("<!-- not run"):
                assert NOT_RUN.search(line), f"{page.name}: {line!r} (write <!-- not run: reason -->)"


def test_the_add_a_task_example_runs(capsys):
    code = next(b for b, _ in blocks(ROOT / "docs" / "writing-a-task.md") if '@register_task("count_shapes")' in b)
    try:
        exec(compile(code, "writing-a-task.md", "exec"), {"__name__": "docs_example"})
        printed = capsys.readouterr().out.strip()
        prompt, target = printed.split(" -> ")
        assert prompt.startswith("<video> ") and prompt[len("<video> "):] in ("how many shapes appear?",
                                                                               "count the shapes.")
        assert target == "<int_3>"  # the count as Gato's integer token
    finally:
        registry.TASKS.pop("count_shapes", None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with what the blocks name: data folders of the synthetic world, a trained model (the built-in
    default model), a run with per-task adapters, and (random, tiny) SigLIP and T5 checkpoints."""
    from unified.api import DEFAULT_MODEL_DIR
    from unified.data.synthetic import write_split
    from unified.model.adapters import TaskAdapters, save_model

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("the examples use the built-in default model, which this checkout lacks")
    root = tmp_path_factory.mktemp("docs")
    write_split(root / "data" / "train", 3, seed=1, split="train", progress=False)
    write_split(root / "data" / "test", 3, seed=1, split="test", progress=False)
    (root / "runs" / "shapes-small").mkdir(parents=True)
    (root / "runs" / "shapes-small" / "best").symlink_to(DEFAULT_MODEL_DIR)
    (root / "runs" / "shapes").mkdir()
    (root / "runs" / "shapes" / "best").symlink_to(DEFAULT_MODEL_DIR)
    from task_rows import tiny_stack

    _, _, tiny = tiny_stack()
    TaskAdapters.attach(tiny, ["vqa", "caption"], {"vqa": "language", "caption": "language"}, r=2)  # as the config
    save_model(tiny, root / "runs" / "lora-per-task" / "final")

    from transformers import SiglipVisionConfig, SiglipVisionModel

    # a random SigLIP of the real one's input size, for the pretrained-encoder example
    SiglipVisionModel(SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=224, patch_size=16)).save_pretrained(
        root / "models" / "siglip-base-patch16-224")

    from transformers import T5Config, T5ForConditionalGeneration

    # a random T5 v1.1 with Flan-T5-small's vocabulary, for the text-backbone example
    T5ForConditionalGeneration(T5Config(vocab_size=32128, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                        decoder_start_token_id=0)).save_pretrained(root / "models" / "flan-t5-small")
    return {"root": root, "ran": set()}


@contextlib.contextmanager
def documented_server(page: Path, log: Path):
    """The page's own `unified serve ... --port 8000` command run on a free port, with the base URL its blocks should
    reach it at; nothing for a page that starts no server."""
    command = next((line for line in page.read_text().splitlines() if line.startswith("unified serve ")), None)
    if command is None:
        yield None
        return
    from serving_fixtures import start_cli_server, stop

    args = shlex.split(command, comments=True)[2:]
    port = args.index("--port")
    proc, base = start_cli_server(args[:port] + args[port + 2:], log)
    try:
        yield base
    finally:
        stop(proc)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_python_block_runs_in_order(workspace, monkeypatch, page, tmp_path):
    monkeypatch.chdir(workspace["root"])
    namespace = {"__name__": f"docs_{page.stem}"}
    try:
        with documented_server(page, tmp_path / "server.log") as base:
            for i, (code, skip) in enumerate(blocks(page)):
                if skip is not None or code in workspace["ran"]:  # a block shown on two pages runs once
                    continue
                if base is not None:
                    code = code.replace("http://127.0.0.1:8000", base)
                exec(compile(code, f"{page.name} block {i}", "exec"), namespace)
                workspace["ran"].add(code)
    finally:
        registry.TASKS.pop("count_shapes", None)
    if page.name == "evaluation.md":
        assert isinstance(namespace["result"].integral, float)
    if page.name == "training.md":
        assert namespace["adapters"].active == "language"  # vqa is in the language group


def test_the_readme_counts_the_registered_tasks():
    from unified.task_zoo import list_tasks

    words = " ".join((ROOT / "README.md").read_text().split())
    assert f"Each of the {len(list_tasks())} built-in tasks" in words
