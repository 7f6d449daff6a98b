"""Atomic, resumable checkpoints.

A checkpoint is a directory `step-{N:08d}/` holding the model (safetensors) with its vocabulary and processor, and
`trainer.pt` (optimizer, scheduler, sampler, data position, RNG states: tensors and plain values only, read back
with torch's restricted `weights_only` loader). It is written into a temporary sibling and
renamed into place, so a run killed mid-write leaves the previous checkpoint intact and never a half-written one.

`fingerprint.json` beside it records the run's config and a digest of its rows; a resume compares them
(`fingerprint_changes`) and names what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.errors import InputError
from unified.saving import write_servable
from unified.task_zoo.registry import task_sources
from unified.training.config import to_dict
from unified.training.report import flat_config

# everything a run writes into its output_dir (`--overwrite` removes all of it; the synthetic data it wrote under
# data/ stays, since it is rewritten whenever its settings differ)
RUN_OUTPUTS = ("checkpoints", "final", "best", "ranks", "logs", "summary.json", "eval.jsonl", "loss.png",
               "config.json")

PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # dropout on a GPU draws from the device generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | Path, step: int, model: Any, processor: Any, trainer_state: dict[str, Any],
                    keep: int = 2, name: str | None = None, task_options: dict | None = None,
                    extra: dict[str, str] | None = None) -> Path:
    """Write `root/step-N` (or `root/name`) atomically; keep the newest `keep` step checkpoints. `task_options`
    (the config's, e.g. multiple choice in rank mode) go into `task_options.json`, where `unified.Model` reads them;
    `extra` maps file names to text written beside them (the run's `fingerprint.json`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"{PREFIX}{step:08d}")
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    sources = task_sources(task_options or {})
    write_servable(tmp, model, processor, task_options, sources, safe_serialization=True)  # a servable model, plus:
    torch.save({**trainer_state, "step": step}, tmp / "trainer.pt")
    for file_name, text in (extra or {}).items():
        (tmp / file_name).write_text(text)
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


# ------------------------------------------------------------------------------------------------ fingerprints
FINGERPRINT = "fingerprint.json"
# what may change between a run and its resume: how long it runs, how often it logs, evaluates and checkpoints,
# how its batches are prepared and how its ranks share the model (DDP or FSDP: the same checkpoint files)
RESUMABLE_CHANGES = ("output_dir", "optim.max_steps", "log_every", "log_with", "eval.", "checkpoint.",
                     "data.media_cache_mb", "data.check_media",
                     "data.num_workers", "data.prefetch", "model.init_from", "fsdp.", "ddp_find_unused_parameters")


def fingerprint(cfg: Any, train_rows: dict[str, list], eval_rows: dict[str, list]) -> dict[str, Any]:
    """{"config": dotted key -> value, "data": {split/task: "rows, sha256"}}: what a resume must match."""
    flat = {k: v for k, v in flat_config(to_dict(cfg)).items() if not k.startswith(RESUMABLE_CHANGES)}

    def digest(rows: list) -> str:
        if hasattr(rows, "digest"):  # tar shards: the digest of the rows as packed, from the index
            return rows.digest()
        text = json.dumps([dict(r.items()) for r in rows], sort_keys=True, default=str)
        return f"{len(rows)} rows, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}"

    data = {f"train/{t}": digest(r) for t, r in train_rows.items()}
    data.update({f"eval/{t}": digest(r) for t, r in eval_rows.items()})
    return {"config": flat, "data": data}


# what a checkpoint's weights, vocabulary, processor and adapters already fix: these cannot change on resume (the
# run would train the checkpoint's model while its config.json recorded another); model settings that only change
# how the model runs may
FIXED_BY_CHECKPOINT = ("model.", "tokenizer.", "processor.", "lora.")
RUNTIME_MODEL_SETTINGS = ("model.gradient_checkpointing", "model.compile")


def fixed_changes(checkpoint: Path, now: dict[str, Any]) -> list[str]:
    """The config keys the checkpoint fixes (`FIXED_BY_CHECKPOINT`) whose value differs in `now`, one phrase each."""
    file = checkpoint / FINGERPRINT
    if not file.is_file():
        return []
    old, new = json.loads(file.read_text()).get("config", {}), now.get("config", {})
    return [f"{key}: {old.get(key, '(absent)')} -> {new.get(key, '(absent)')}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) and key.startswith(FIXED_BY_CHECKPOINT)
            and not key.startswith(RUNTIME_MODEL_SETTINGS)]


def fingerprint_changes(checkpoint: Path, now: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint and `now`, one phrase each (empty: nothing, or the checkpoint
    predates fingerprints)."""
    file = checkpoint / FINGERPRINT
    if not file.is_file():
        return []
    then = json.loads(file.read_text())
    changes = []
    for part, noun in (("config", "config"), ("data", "data")):
        old, new = then.get(part, {}), now.get(part, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes.append(f"{noun} {key} changed: {old.get(key, '(absent)')} -> {new.get(key, '(absent)')}")
    if len(changes) > 6:
        changes = [*changes[:6], f"and {len(changes) - 6} more"]
    return changes
