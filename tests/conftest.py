"""Shared by every test module: with pytest-xdist (`pytest -n 2`), each worker keeps to one core."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses the tests start inherit it
    import torch

    torch.set_num_threads(1)

# the longest files first, so that with two workers neither is left running one of them alone at the end
LONGEST_FIRST = ("test_recipes.py", "test_training_run.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
