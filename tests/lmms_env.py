"""An environment of its own for lmms-eval, which cannot be installed beside this package: every release pins
av<16 (we need av>=17), 0.7.x also torch 2.14, torchvision and wandb==0.25.0.

It is a plain virtual environment, built once and reused (`UNIFIED_LMMS_VENV`, default
~/.cache/unified/lmms-venv): the same torch as this interpreter's, lmms-eval installed with --no-deps, our runtime
dependencies and the `lmms` extra (what lmms-eval's command line imports). It holds no copy of `unified`: each
run installs this checkout into a folder of its own (`install_checkout`), so checkouts sharing the environment
never see each other's code. When pip cannot get a package, the caller skips with pip's own last lines.

lmms-eval 0.6.1, not 0.7.x: 0.7.0-0.7.3 pass every loglikelihood result through `unwrap_generation_output`, which
turns the (loss, greedy) tuple into a string, so every multiple-choice task fails in `process_results`
("too many values to unpack"), whatever the model.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tomllib
import venv
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
LMMS_EVAL = "lmms-eval==0.6.1"
VENV = Path(os.environ.get("UNIFIED_LMMS_VENV", Path.home() / ".cache" / "unified" / "lmms-venv"))


class Unavailable(Exception):
    """pip could not build the environment: the message is what it said."""


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["lmms"], "setuptools>=77"]


def _pip(python: Path, *args: str, timeout: int = 900) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()][-6:]
        raise Unavailable(f"pip install {' '.join(args)} failed: " + " | ".join(tail))


def environment() -> Path:
    """The environment's python, built (or brought up to date with pyproject.toml) under a lock."""
    python = VENV / "bin" / "python"
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    wanted = {"lmms_eval": LMMS_EVAL, "torch": torch_pin, "requirements": _requirements()}
    stamp = VENV / "unified-stamp.json"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest workers, or two checkouts, build it once
        if stamp.is_file() and json.loads(stamp.read_text()) == wanted and python.is_file():
            return python
        if not python.is_file():
            venv.create(VENV, with_pip=True)
        _pip(python, torch_pin)  # first, so that nothing below pulls another build of it
        _pip(python, "--no-deps", LMMS_EVAL)
        _pip(python, *wanted["requirements"], torch_pin)
        stamp.write_text(json.dumps(wanted))
    return python


def install_checkout(python: Path, target: Path) -> dict[str, str]:
    """This checkout built and installed into `target` (its entry point included); the environment variables
    that put it on the environment's path."""
    _pip(python, "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT), timeout=300)
    return {"PYTHONPATH": str(target)}
