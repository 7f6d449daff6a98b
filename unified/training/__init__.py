"""Multitask training: config, task mixture, stages, atomic checkpoints and the loop.

    accelerate launch training/multitask.py --config training/configs/tiny-smoke.yaml optim.max_steps=50
    unified train training/configs/tiny-smoke.yaml optim.max_steps=50
"""

from unified.training.config import TrainConfig, load_config
from unified.training.loop import TrainingError, main, train
from unified.training.mixture import TaskSampler

__all__ = ["TaskSampler", "TrainConfig", "TrainingError", "load_config", "main", "train"]
