"""Atomic, resumable checkpoints.

A checkpoint is a directory `step-{N:08d}/` holding the model (safetensors) with its vocabulary and processor, and
`trainer.pt` (optimizer, scheduler, sampler, data position, RNG states: tensors and plain values only, read back
with torch's restricted `weights_only` loader). It is written into a temporary sibling and
renamed into place, so a run killed mid-write leaves the previous checkpoint intact and never a half-written one.

`fingerprint.json` beside it records the run's config and a digest of its rows; a resume compares them
(`fingerprint_changes`) and names what changed. `manifest.json`, written last, holds every other file's size and
sha256: `checkpoint_damage` checks a checkpoint against it (and the framing of its safetensors and JSON files), so
a file cut short, a byte flipped or a file removed is named before anything is loaded. A resume stops at a damaged
newest checkpoint (naming it) unless `--resume last-intact` asks for the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.errors import InputError
from unified.local_dirs import check_saved_model, read_json
from unified.saving import write_servable
from unified.task_zoo.registry import task_sources
from unified.training.config import to_dict
from unified.training.report import flat_config

# everything a run writes into its output_dir (`--overwrite` removes all of it; the synthetic data it wrote under
# data/ stays, since it is rewritten whenever its settings differ)
RUN_OUTPUTS = ("checkpoints", "final", "best", "ranks", "logs", "summary.json", "eval.jsonl", "loss.png",
               "config.json")

PREFIX = "step-"
MANIFEST = "manifest.json"
# The kill tests' hook (tests/test_damage.py): "POINT:STEP" makes the process SIGKILL itself at that point of that
# step (mid-step, between-model-and-state, mid-save), as a crash or an out-of-memory kill would.
KILL_AT = "UNIFIED_TEST_KILL_AT"


def kill_point(point: str, step: int) -> None:
    if os.environ.get(KILL_AT) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


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
    for stale in root.glob(".tmp-*"):  # this one's, or left by a process killed while writing (one writer per run)
        shutil.rmtree(stale, ignore_errors=True)
    sources = task_sources(task_options or {})
    write_servable(tmp, model, processor, task_options, sources, safe_serialization=True)  # a servable model, plus:
    kill_point("between-model-and-state", step)
    torch.save({**trainer_state, "step": step}, tmp / "trainer.pt")
    for file_name, text in (extra or {}).items():
        (tmp / file_name).write_text(text)
    kill_point("mid-save", step)
    write_manifest(tmp)
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
    """Every `step-N` directory under `root`, oldest first, intact or not (`checkpoint_damage` tells which): one
    left without its trainer state is a damaged checkpoint, never passed over in silence."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def _digest(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """`manifest.json`: {relative path: [size, sha256]} of every file in the checkpoint, what `checkpoint_damage`
    checks it against."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(folder).as_posix(): [p.stat().st_size, _digest(p)] for p in files}
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "files": entries}, indent=0))


def checkpoint_damage(path: str | Path) -> InputError | None:
    """None when the checkpoint at `path` is intact, else the `InputError` naming its damaged file and what is wrong:
    a file missing, cut short or changed since it was written (sizes and sha256 in `manifest.json`), a safetensors
    header or JSON file that does not parse, a `config.json` of another model type, a `trainer.pt` that is not a
    whole zip archive. Checkpoints written before manifests get every check but the hashes."""
    path = Path(path)
    try:
        if not (path / "trainer.pt").is_file():
            raise InputError("checkpoint", str(path / "trainer.pt"), "missing: not a whole training checkpoint")
        manifest = path / MANIFEST
        if manifest.exists():
            entries = read_json(manifest, "checkpoint")
            files = entries.get("files") if isinstance(entries, dict) else None
            if not isinstance(files, dict):
                raise InputError("checkpoint", str(manifest), "damaged: no 'files' table")
            try:
                files = {str(name): (int(size), str(digest)) for name, (size, digest) in files.items()}
            except (TypeError, ValueError):
                raise InputError("checkpoint", str(manifest), "damaged: its entries are not [size, sha256]") from None
            for name in sorted(files):
                if not (path / name).is_file():
                    raise InputError("checkpoint", str(path / name), "missing (listed in manifest.json)")
        check_saved_model(path, "checkpoint", model_type="unified")
        try:
            with zipfile.ZipFile(path / "trainer.pt") as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise InputError("checkpoint", str(path / "trainer.pt"), f"damaged: not a whole torch archive "
                             f"({err})") from None
        if bad is not None:
            raise InputError("checkpoint", str(path / "trainer.pt"), f"damaged: its record {bad!r} fails its CRC")
        if manifest.exists():  # what framing cannot see: a file cut at a boundary, a byte changed inside
            for name, (size, _) in sorted(files.items()):
                if (path / name).stat().st_size != size:
                    raise InputError("checkpoint", str(path / name), f"damaged: {(path / name).stat().st_size} "
                                     f"bytes, written as {size} (cut short or changed since)")
            for name, (_, digest) in sorted(files.items()):
                if _digest(path / name) != digest:
                    raise InputError("checkpoint", str(path / name), "damaged: its bytes changed since the "
                                     "checkpoint was written (sha256 differs from manifest.json)")
    except InputError as err:
        return err
    return None


def newest_intact(root: str | Path, log=print) -> Path | None:
    """The newest intact checkpoint under `root` (each damaged newer one logged with what is wrong), or None."""
    for path in reversed(list_checkpoints(root)):
        damage = checkpoint_damage(path)
        if damage is None:
            return path
        log(f"passing over the damaged checkpoint {path.name}: {damage}")
    return None


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
