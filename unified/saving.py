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

TASK_OPTIONS = "task_options.json"  # {task: its options} for every task the model was trained on
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # formats that can run code when loaded


def require_safetensors(path: str | Path, what: str) -> None:
    """Refuse a model directory whose weights exist only in a pickle format (`pytorch_model.bin`...): loading one
    can run code. `InputError` naming the directory, the files and the way out."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise InputError(what, str(path), f"holds weights only as pickle ({', '.join(pickled)}), which can run code "
                         "when loaded; only safetensors are read. Convert them where the source is trusted: "
                         "model.save_pretrained(dir, safe_serialization=True)")


def write_servable(directory: str | Path, model: Any, processor: Any,
                   task_options: Mapping[str, Mapping[str, Any]] | None = None, **save_kwargs: Any) -> Path:
    """Write everything `unified.Model.from_pretrained` needs into `directory`; returns it. `task_options` holds
    every task the model was trained on, each with its options ({} for the defaults): what it can be asked."""
    from unified.model.adapters import save_model

    directory = Path(directory)
    save_model(model, directory, **save_kwargs)
    processor.save_pretrained(directory)
    if task_options is not None:
        (directory / TASK_OPTIONS).write_text(json.dumps({k: dict(v) for k, v in task_options.items()}, indent=2))
    from unified.hub import write_auto_map

    write_auto_map(directory)  # transformers' Auto classes load it in a fresh process (trust_remote_code=True)
    return directory


def read_task_options(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The per-task settings saved with a model ({} when it has none)."""
    path = Path(directory) / TASK_OPTIONS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(str(path), None, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InputError(str(path), data, "expected {task: {option: value}}")
    return data
