"""A model's per-task LoRA adapters combined into one, through peft's `add_weighted_adapter`.

    merge_adapters("runs/lora/final", "one-adapter", method="cat", weights=[0.5, 1.0])

saved model (base + adapters/) -> a peft `LoraModel` over the base holding every adapter -> `add_weighted_adapter`
-> a copy of the model whose `adapters/` holds the one combined adapter, every task of the merged adapters
routed to it. Methods are peft's: `cat` (the adapters' low-rank factors stacked: exactly sum_i w_i B_i A_i, rank
sum r_i), `linear` (weighted factors, one rank: an approximation), `svd` (the weighted sum of full deltas cut to
`rank` by SVD), `ties`, `dare_linear`, `dare_ties` (on the factors, kept share `density`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file, save_file

from unified.errors import InputError
from unified.local_dirs import local_dir, require_safetensors
from unified.merging.checkpoints import RUN_RECORDS, replace_dir
from unified.model import UnifiedModel
from unified.model.adapters import INDEX, NOT_ADAPTED
from unified.saving import TASK_OPTIONS, TASK_SOURCES, read_task_options

__all__ = ["ADAPTER_METHODS", "merge_adapters"]

ADAPTER_METHODS = ("cat", "linear", "svd", "ties", "dare_linear", "dare_ties")


def merge_adapters(model: str | Path, out: str | Path, *, method: str = "cat",
                   weights: Sequence[float] | None = None, name: str = "merged", rank: int | None = None,
                   density: float = 0.5, overwrite: bool = False) -> Path:
    """Combine every adapter of the saved `model` into one adapter `name` (weights per adapter in the order of its
    `adapters.json`, 1 each by default); write the model with that adapter to `out`. See the module docstring."""
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
    from peft.tuners.lora import LoraModel

    if method not in ADAPTER_METHODS:
        raise InputError("method", method, f"expected one of {', '.join(ADAPTER_METHODS)}")
    source = local_dir(model, "model")
    require_safetensors(source, "model")
    index_path = source / "adapters" / INDEX
    if not index_path.is_file():
        raise InputError("model", str(source), "has no per-task adapters (adapters/adapters.json) to merge")
    index = json.loads(index_path.read_text())
    names, settings = list(index["names"]), dict(index["settings"])
    if len(names) < 2:
        raise InputError("model", str(source), f"has one adapter ({names[0]}): nothing to merge")
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise InputError("weights", weights, f"expected one weight per adapter ({', '.join(names)})")
    if not 0.0 < density <= 1.0:
        raise InputError("density", density, "expected the kept share in (0, 1]")
    network = UnifiedModel.from_pretrained(source)
    configs = {n: LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                             target_modules=list(settings["target_modules"]), exclude_modules=NOT_ADAPTED,
                             bias="none") for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You have passed exclude_modules")
        tuner = LoraModel(network, configs, names[0])
        for n in names[1:]:
            tuner.inject_adapter(network, n)
        for n in names:
            set_peft_model_state_dict(network, load_file(str(source / "adapters" / n / "adapter_model.safetensors")),
                                      adapter_name=n)
        tuner.add_weighted_adapter(names, weights, name, combination_type=method,
                                   svd_rank=rank if method == "svd" else None, density=density)
    merged_settings = {**settings, "r": tuner.peft_config[name].r, "alpha": tuner.peft_config[name].lora_alpha}
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(network, adapter_name=name).items()}
    groups = dict.fromkeys(read_task_options(source), name)
    groups.update(dict.fromkeys(index.get("groups", {}), name))
    out = Path(out)
    with replace_dir(out, overwrite) as tmp:
        for item in source.iterdir():
            if item.name in RUN_RECORDS - {TASK_OPTIONS, TASK_SOURCES} or item.name == "adapters":
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        (tmp / "adapters" / name).mkdir(parents=True)
        save_file(state, str(tmp / "adapters" / name / "adapter_model.safetensors"))
        (tmp / "adapters" / name / "adapter_config.json").write_text(json.dumps(merged_settings, indent=2))
        (tmp / "adapters" / INDEX).write_text(json.dumps({"names": [name], "groups": groups,
                                                          "settings": merged_settings}, indent=2))
        config = json.loads((tmp / "config.json").read_text())
        config["merge"] = {"method": f"adapters {method}", "models": [str(source)], "adapters": names,
                           "weights": weights, **({"rank": rank} if method == "svd" else {}),
                           **({"density": density} if method not in ("cat", "linear", "svd") else {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
