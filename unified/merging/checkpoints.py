"""Whole saved models merged weight by weight into a new servable directory.

    merge_checkpoints(["runs/a/final", "runs/b/final"], "merged", method="slerp", t=0.5)
    merge_checkpoints(["old", "new"], "merged", method="svd-delta", base="pretrained", rank=16, t=0.5)

models (saved directories) -> checked alike (architecture, vocabulary, tasks, tensor names and shapes)
    -> one tensor at a time through `unified.merging.methods` -> the first model's directory with the merged
    weights, written to a temporary folder and renamed into place.

The merged directory is the first model's (config, vocabulary, processor) with the merged `model.safetensors`; its
`task_options.json` lists every task any of the models was trained on (the union: models trained on different
tasks merging is the point), and `config.json` records how it was made under `merge`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unified.errors import InputError
from unified.local_dirs import local_dir, require_safetensors
from unified.merging import methods
from unified.saving import TASK_OPTIONS, TASK_SOURCES, read_task_options, read_task_sources

__all__ = ["merge_checkpoints", "replace_dir", "weight_files"]

WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
# config.json keys that say how a directory was made, not what the network is
PROVENANCE = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "auto_map", "merge"}
# what a run leaves beside its weights that describes that run, not the merged model: not copied
RUN_RECORDS = {"trainer.pt", "fingerprint.json", "eval_results.json", "eval_history.jsonl", "run_summary.json",
               "README.md", "training_config.json", TASK_OPTIONS, TASK_SOURCES}
VOCABULARY_FILES = ("text.model", "unified_tokenizer.json", "tokenizer.json", "tokenizer.model", "spiece.model")


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a saved model: one file, or the shards its index lists."""
    index = directory / SHARD_INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / n for n in names]
    if (directory / WEIGHTS).is_file():
        return [directory / WEIGHTS]
    raise InputError("model", str(directory), f"holds no {WEIGHTS} (nor {SHARD_INDEX})")


class _Weights:
    """Lazy access to a saved model's tensors by name (one tensor in memory at a time)."""

    def __init__(self, directory: Path, stack: ExitStack):
        self.directory = directory
        self.where: dict[str, Any] = {}
        for path in weight_files(directory):
            handle = stack.enter_context(safe_open(str(path), framework="pt"))
            for key in handle.keys():
                self.where[key] = handle

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.where[key].get_tensor(key)

    def shape(self, key: str) -> list[int]:
        return list(self.where[key].get_slice(key).get_shape())


def _config(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "config.json").read_text())


def _check_alike(dirs: Sequence[Path], weights: Sequence[_Weights]) -> None:
    """Refuse models that cannot be merged tensor by tensor: `InputError` naming the first difference."""
    first, first_cfg = dirs[0], _config(dirs[0])
    if first_cfg.get("quantization"):
        raise InputError("model", str(first), "is quantised (an export); merge the unquantised models")
    for d, w in zip(dirs[1:], weights[1:]):
        cfg = _config(d)
        if cfg.get("quantization"):
            raise InputError("model", str(d), "is quantised (an export); merge the unquantised models")
        difference = _first_difference({k: v for k, v in first_cfg.items() if k not in PROVENANCE},
                                       {k: v for k, v in cfg.items() if k not in PROVENANCE})
        if difference is not None:
            key, mine, theirs = difference
            raise InputError(f"config {key}", theirs, f"differs from {first}'s ({mine!r}): only models of the same "
                             "architecture merge")
        for name in VOCABULARY_FILES:
            mine, theirs = first / name, d / name
            if mine.is_file() != theirs.is_file() or (mine.is_file() and mine.read_bytes() != theirs.read_bytes()):
                raise InputError(f"vocabulary {name}", str(d), f"differs from {first}'s: token ids would not mean "
                                 "the same in both models")
        missing = sorted(set(weights[0].where) ^ set(w.where))
        if missing:
            holder = first if missing[0] in weights[0].where else d
            raise InputError(f"tensor {missing[0]}", str(d), f"only in {holder}: the models' weights differ")
        for key in sorted(w.where):
            if w.shape(key) != weights[0].shape(key):
                raise InputError(f"tensor {key}", w.shape(key), f"shape differs from {first}'s "
                                 f"{weights[0].shape(key)}")
    for d in dirs:
        if (d / "adapters").is_dir():
            raise InputError("model", str(d), "carries per-task LoRA adapters: fold them into the base first "
                             "(`unified export MODEL --merge-adapters`) or merge the adapters themselves")


def _first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    # (dotted key, a's value, b's value) of the first field where two configs differ
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else (prefix.rstrip("."), a, b)


def _union_of_tasks(dirs: Sequence[Path]) -> tuple[dict[str, dict], dict[str, dict]]:
    options: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    for d in dirs:
        for task, opts in read_task_options(d).items():
            if task in options and options[task] != opts:
                raise InputError(f"task {task}", str(d), f"was trained with options {opts}, differing from "
                                 f"{options[task]} in an earlier model: one merged model answers it one way")
            options.setdefault(task, opts)
        for task, src in read_task_sources(d).items():
            sources.setdefault(task, src)
    return options, sources


def _merge_tensor(key: str, method: str, xs: list[torch.Tensor], base: torch.Tensor | None,
                  settings: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
    if not xs[0].is_floating_point():  # integer buffers (position ids, counters): equal, or not mergeable
        for x in xs[1:]:
            if not torch.equal(x, xs[0]):
                raise InputError(f"tensor {key}", str(x.dtype), "an integer tensor differing between the models "
                                 "cannot be interpolated")
        return xs[0]
    w = settings.get("weights")
    if method == "linear":
        out = methods.linear(xs, w)
    elif method == "slerp":
        out = methods.slerp(xs[0], xs[1], settings["t"])
    elif method == "ties":
        out = methods.ties(xs, base, w, settings["density"])
    elif method == "dare":
        out = methods.dare(xs, base, w, settings["density"], generator)
    else:
        out = methods.svd_delta(xs[0], xs[1], base, settings["rank"], settings["t"])
    return out.to(xs[0].dtype)


def check_settings(method: str, n_models: int, base: Any, weights: Sequence[float] | None, t: float,
                   rank: int, density: float) -> None:
    """The merge's own arguments, before any file is read: `InputError` naming the bad one."""
    if method not in methods.METHODS:
        raise InputError("method", method, f"expected one of {', '.join(methods.METHODS)}")
    if n_models < 2 and not (method in methods.NEEDS_BASE and n_models == 1):
        raise InputError("models", n_models, "expected at least two models to merge")
    if method in methods.TWO_MODELS and n_models != 2:
        raise InputError("models", n_models, f"{method} interpolates between exactly two models (A, B)")
    if method in methods.NEEDS_BASE and base is None:
        raise InputError("base", None, f"{method} takes task vectors from the common ancestor: give --base")
    if weights is not None and (len(weights) != n_models or method in methods.TWO_MODELS):
        reason = ("is for linear, ties and dare (use --t)" if method in methods.TWO_MODELS
                  else f"expected one weight per model ({n_models})")
        raise InputError("weights", list(weights), reason)
    if not 0.0 <= t <= 1.0:
        raise InputError("t", t, "expected an interpolation factor in [0, 1]")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError("rank", rank, "expected an int >= 1")
    if not 0.0 < density <= 1.0:
        raise InputError("density", density, "expected the kept share of each task vector in (0, 1]")


def merge_checkpoints(models: Sequence[str | Path], out: str | Path, *, method: str = "linear",
                      base: str | Path | None = None, weights: Sequence[float] | None = None, t: float = 0.5,
                      rank: int = 16, density: float = 0.5, seed: int = 0, overwrite: bool = False) -> Path:
    """Merge saved models (the same architecture and vocabulary) into `out`; returns it. See the module docstring.

    `method`: linear (weighted average; `weights`, equal by default), slerp (A to B by `t`), ties and dare (task
    vectors from `base`, kept share `density`, `weights` per model, 1 by default; dare's dropping seeded by
    `seed`), svd-delta (A the older model, B the newer: SLERP(A, base + rank-`rank` SVD of (B - base), `t`)).
    `out` must not hold anything unless `overwrite`."""
    check_settings(method, len(models), base, weights, t, rank, density)
    dirs = [local_dir(m, "model") for m in models]
    base_dir = local_dir(base, "base") if base is not None else None
    for d in [*dirs, *([base_dir] if base_dir else [])]:
        require_safetensors(d, "model")
    out = Path(out)
    check_out(out, overwrite)
    settings = {"weights": None if weights is None else [float(w) for w in weights], "t": float(t),
                "rank": int(rank), "density": float(density)}
    options, sources = _union_of_tasks(dirs)
    generator = torch.Generator().manual_seed(seed)
    with ExitStack() as stack:
        loaded = [_Weights(d, stack) for d in dirs]
        checked = [*dirs, base_dir] if base_dir is not None else dirs
        base_weights = _Weights(base_dir, stack) if base_dir is not None else None
        _check_alike(checked, [*loaded, base_weights] if base_weights else loaded)
        merged = {}
        for key in sorted(loaded[0].where):  # sorted: dare's seeded masks do not depend on the file's order
            xs = [w[key] for w in loaded]
            merged[key] = _merge_tensor(key, method, xs, base_weights[key] if base_weights else None, settings,
                                        generator).contiguous()
    record = {"method": method, "models": [str(d) for d in dirs], "base": str(base_dir) if base_dir else None,
              **{k: v for k, v in settings.items() if _used(method, k)}, **({"seed": seed} if method == "dare" else {})}
    with replace_dir(out, overwrite) as tmp:
        for item in dirs[0].iterdir():
            if item.name in (SHARD_INDEX, *RUN_RECORDS) or item.suffix == ".safetensors":
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        save_file(merged, str(tmp / WEIGHTS), metadata={"format": "pt"})
        config = _config(dirs[0])
        config["merge"] = record
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if options:
            (tmp / TASK_OPTIONS).write_text(json.dumps(options, indent=2))
        if sources:
            (tmp / TASK_SOURCES).write_text(json.dumps(sources, indent=2))
    return out


def _used(method: str, key: str) -> bool:
    return {"weights": method in ("linear", "ties", "dare"), "t": method in ("slerp", "svd-delta"),
            "rank": method == "svd-delta", "density": method in ("ties", "dare")}[key]


def check_out(out: Path, overwrite: bool) -> None:
    """An output directory may be written: absent, empty, or `overwrite`; never a file."""
    if out.exists() and not out.is_dir():
        raise InputError("out", str(out), "is a file; expected a directory to write")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("out", str(out), "already holds files; pass overwrite=True (--overwrite) to replace them")


@contextmanager
def replace_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside `out`, renamed to `out` when the block ends without an error (and removed when it
    raises): a reader never sees half a model, and a refused or failed write leaves `out` as it was."""
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f"{tmp.name}.old"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
