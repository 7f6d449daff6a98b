"""Two tasks from outside the package (`tests/plugin_tasks.py`), written only against the documented protocol, go
through everything the built-in ones do: synthetic rows, training inside the mixture, evaluation with the integral
score and the ablation, `Model.generate`, `unified demo`. And no library module knows a built-in task by name."""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

from unified.task_zoo import registry

pytestmark = pytest.mark.slow  # training runs

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "tiny-smoke.yaml"
PLUGINS = ("shape_count", "pitch_match")
# A dataset, not task logic: the synthetic world writes one file of rows per built-in task, as any dataset does.
MAY_NAME_TASKS = ("unified/task_zoo/tasks/", "unified/data/synthetic.py")


@pytest.fixture(scope="module")
def plugins():
    """The plug-in module imported into a registry of its own, so the rest of the suite never sees its tasks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "TASKS", dict(registry.TASKS))
        sys.modules.pop("plugin_tasks", None)
        importlib.import_module("plugin_tasks")
        yield
        sys.modules.pop("plugin_tasks", None)


@pytest.fixture(scope="module")
def run(plugins, tmp_path_factory):
    from unified.training import load_config, train

    out = tmp_path_factory.mktemp("plugin-run")
    cfg = load_config(SMOKE, [f"output_dir={out}", "data.synthetic={n_train: 24, n_eval: 6, seed: 3}",
                              f"data.tasks=[{', '.join(PLUGINS)}, vqa, retrieval]", "mixture.strategy=uniform",
                              "optim.max_steps=12", "optim.batch_size=4", "checkpoint.every=100", "log_with=none",
                              "eval.max_rows=6"])
    return out, train(cfg, progress=False)


def test_plugin_tasks_get_synthetic_rows_from_the_scene(run):
    out, _ = run
    scenes = [json.loads(line) for line in (out / "data" / "train" / "scenes.jsonl").read_text().splitlines()]
    counts = [json.loads(line) for line in (out / "data" / "train" / "shape_count.jsonl").read_text().splitlines()]
    pitches = [json.loads(line) for line in (out / "data" / "train" / "pitch_match.jsonl").read_text().splitlines()]
    assert [r["count"] for r in counts] == [len(s["shapes"]) for s in scenes]
    assert all(s["pitch"] in r["sentence"] for s, r in zip(scenes, pitches))
    assert {r["video"] for r in counts} == {s["video"] for s in scenes}


def test_plugin_tasks_train_inside_the_mixture(run):
    _, summary = run
    for name in PLUGINS:
        task = summary["tasks"][name]
        assert task["batches"] >= 1 and task["last_loss"] is not None, summary["tasks"]


def test_plugin_tasks_evaluate_into_the_integral_and_the_ablation(run):
    from unified import Model

    out, _ = run
    final = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert set(final["metrics"]) == {*PLUGINS, "vqa", "retrieval"}
    assert set(final["metrics"]["shape_count"]) == {"accuracy"}
    assert set(final["metrics"]["pitch_match"]) == {"recall_at_1", "recall_at_5"}
    model = Model.from_pretrained(out / "final")
    result = model.evaluate(out / "data" / "test", tasks=list(PLUGINS), ablate=True, progress=False)
    assert result.integral == pytest.approx(sum(result.scores.values()) / 2)
    for mode in ("full", "one_frame", "no_audio", "no_media"):
        assert set(result.ablation[mode]) == {*PLUGINS, "integral"}
    distinct = len({r["sentence"] for r in (json.loads(x) for x in
                                             (out / "data" / "test" / "pitch_match.jsonl").read_text().splitlines())})
    if distinct <= 5:  # every clip's own sentence is among the top five of at most five candidates
        assert result.metrics["pitch_match"]["recall_at_5"] == 1.0


def test_plugin_tasks_answer_through_generate_and_the_demo(run):
    from unified import Model
    from unified.demo import run_demo

    out, _ = run
    model = Model.from_pretrained(out / "final")
    row = json.loads((out / "data" / "test" / "shape_count.jsonl").read_text().splitlines()[0])
    clip = str(out / "data" / "test" / row["video"])
    count = model.generate(task="shape_count", video=clip)
    assert count is None or (isinstance(count, int) and 0 <= count < 256)
    embedding = model.generate(task="pitch_match", video=clip, audio=clip)
    assert embedding.shape == (model.network.config.text.embed_dim,) and abs(float(embedding.norm()) - 1) < 1e-4
    report = run_demo(out / "demo", model_path=out / "final", log=lambda _: None)
    shown = {r[0]: r for r in report["rows"]}
    assert set(PLUGINS) <= set(shown)
    scene = json.loads((out / "demo" / "clip" / "scenes.jsonl").read_text())
    assert shown["shape_count"][3] == str(len(scene["shapes"]))  # the truth cell is the scene's own count


def test_no_library_module_names_a_builtin_task():
    """Outside a task's own file (and the synthetic dataset), code never tests which task it has: no string
    literal equal to a built-in task's name, no `hasattr` / `getattr` probing of a task."""
    from unified.task_zoo.tasks import __all__ as _builtins  # noqa: F401  (registers them)

    names = {n for n, cls in registry.TASKS.items() if cls.__module__.startswith("unified.task_zoo.tasks")}
    assert len(names) == 14
    found = []
    for path in sorted((ROOT / "unified").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(MAY_NAME_TASKS):
            continue
        source = path.read_text()
        tree = ast.parse(source)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and id(node) not in docstrings):
                found.append(f"{rel}:{node.lineno} {node.value!r}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("hasattr", "getattr")
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in ("task", "task_obj")):
                found.append(f"{rel}:{node.lineno} {node.func.id}(task, ...)")
    assert not found, found
