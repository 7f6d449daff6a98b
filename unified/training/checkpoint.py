"""Atomic, resumable checkpoints.

A checkpoint is a directory `step-{N:08d}/` holding the model (safetensors) with its vocabulary and processor, and
`trainer.pt` (optimizer, scheduler, sampler, data position, RNG states: tensors and plain values only, read back
with torch's restricted `weights_only` loader). It is written into a temporary sibling and
renamed into place, so a run killed mid-write leaves the previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.errors import InputError
from unified.saving import write_servable

PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save_checkpoint(root: str | Path, step: int, model: Any, processor: Any, trainer_state: dict[str, Any],
                    keep: int = 2, name: str | None = None, task_options: dict | None = None) -> Path:
    """Write `root/step-N` (or `root/name`) atomically; keep the newest `keep` step checkpoints. `task_options`
    (the config's, e.g. multiple choice in rank mode) go into `task_options.json`, where `unified.Model` reads them."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"{PREFIX}{step:08d}")
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_servable(tmp, model, processor, task_options, safe_serialization=True)  # a servable model, plus:
    torch.save({**trainer_state, "step": step}, tmp / "trainer.pt")
    old = None
    if final.exists():  # replace: move the old one aside first so the rename stays atomic
        old = root / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old)
    if name is None:
        for stale in list_checkpoints(root)[:-keep]:
            shutil.rmtree(stale)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "trainer.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """`trainer.pt` read with torch's restricted loader (`weights_only=True`: tensors, numbers, strings and
    containers only, never code), so a checkpoint directory from elsewhere cannot run anything."""
    file = Path(path) / "trainer.pt"
    try:
        state = torch.load(file, weights_only=True)
    except FileNotFoundError:
        raise InputError("checkpoint", str(path), "no trainer.pt: not a training checkpoint") from None
    except Exception as err:  # noqa: BLE001  (torch raises UnpicklingError, RuntimeError... for a foreign file)
        raise InputError("checkpoint", str(file), f"not a trainer state this library wrote, or one holding "
                         f"objects beyond tensors and plain values ({type(err).__name__}: {err})"[:400]) from None
    if not isinstance(state, dict) or "step" not in state:
        raise InputError("checkpoint", str(file), "not a trainer state (no step)")
    return state
