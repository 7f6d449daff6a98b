"""A servable model directory, written in one place: weights (safetensors; per-task LoRA adapters under
`adapters/`), the vocabulary, the processor and the per-task settings the model answers with.

    write_servable("runs/x/final", model, processor, {"video_mcqa": {"mode": "rank"}})
    Model.from_pretrained("runs/x/final")        # reads all four back

`Model.save_pretrained`, training checkpoints (which add `trainer.pt`) and the end of training all call it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unified.errors import InputError
from unified.hub import write_auto_map
from unified.local_dirs import PICKLE_SUFFIXES, require_safetensors
from unified.model.adapters import save_model

__all__ = ["PICKLE_SUFFIXES", "TASK_OPTIONS", "TASK_SOURCES", "read_task_options", "read_task_sources",
           "require_safetensors", "write_servable"]

TASK_OPTIONS = "task_options.json"  # {task: its options} for every task the model was trained on
TASK_SOURCES = "task_sources.json"  # {task: {module, package, version}}: where each task's code comes from


def write_servable(directory: str | Path, model: Any, processor: Any,
                   task_options: Mapping[str, Mapping[str, Any]] | None = None,
                   task_sources: Mapping[str, Mapping[str, str]] | None = None, **save_kwargs: Any) -> Path:
    """Write everything `unified.Model.from_pretrained` needs into `directory`; returns it. `task_options` holds
    every task the model was trained on, each with its options ({} for the defaults): what it can be asked;
    `task_sources` where each task's code comes from (`unified.task_zoo.registry.task_sources`)."""
    directory = Path(directory)
    save_model(model, directory, **save_kwargs)
    processor.save_pretrained(directory)
    if task_options is not None:
        (directory / TASK_OPTIONS).write_text(json.dumps({k: dict(v) for k, v in task_options.items()}, indent=2))
    if task_sources:
        (directory / TASK_SOURCES).write_text(json.dumps({k: dict(v) for k, v in task_sources.items()}, indent=2))

    write_auto_map(directory)  # transformers' Auto classes load it in a fresh process (trust_remote_code=True)
    return directory


def read_task_sources(directory: str | Path) -> dict[str, dict[str, str]]:
    """Where the saved model's tasks come from ({} for a model saved before it was recorded)."""
    return _read_per_task(Path(directory) / TASK_SOURCES, "{task: {module, package, version}}")


def read_task_options(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The per-task settings saved with a model ({} when it has none)."""
    return _read_per_task(Path(directory) / TASK_OPTIONS, "{task: {option: value}}")


def _read_per_task(path: Path, expected: str) -> dict[str, dict[str, Any]]:
    # {task: {...}} from a JSON file beside the weights; absent: {}; anything else names the file
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(str(path), None, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError(str(path), data, f"expected {expected}")
    return data
