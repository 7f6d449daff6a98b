"""Merging saved models: whole checkpoints weight by weight (`checkpoints`), through the methods on plain tensors
(`methods`: linear, slerp, ties, dare, svd-delta), and a model's per-task LoRA adapters into one (`adapters`,
through peft's `add_weighted_adapter`).

    >>> from unified import merge
    >>> merge(["runs/a/final", "runs/b/final"], "merged", method="slerp", t=0.3)
    >>> merge(["old", "new"], "merged", method="svd-delta", base="pretrained", rank=16)
"""

from unified.merging.adapters import ADAPTER_METHODS, merge_adapters
from unified.merging.checkpoints import merge_checkpoints as merge
from unified.merging.methods import METHODS

__all__ = ["ADAPTER_METHODS", "METHODS", "merge", "merge_adapters"]
