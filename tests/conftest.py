"""Shared by every test module: with pytest-xdist (`make test` runs two workers), each worker keeps to one core."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses the tests start inherit it
    import torch

    torch.set_num_threads(1)
