"""`unified export`: a saved model rewritten for shipping: adapters folded in, a smaller dtype, weight-only int8 /
int4 linear layers, under a size budget.

    export("runs/x/final", "ship", dtype="bf16", quantize="int8", max_size="4.5GB")
    Model.from_pretrained("ship")            # loads in bf16, its linear layers int8: no extra argument

saved model -> Model (adapters attached) -> [fold each adapter into its own copy] -> [cast to dtype]
    -> [quantise the language model's linears] -> a temporary folder beside `out` -> size checked -> renamed.

`config.json` records the export under `export` ({"dtype", "merged_adapter", "source"}) and the quantisation
under `quantization` (`unified.model.quantization.describe`); `Model.from_pretrained` reads both back. Weights are
safetensors only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from unified.api import Model
from unified.errors import InputError
from unified.hub import write_auto_map
from unified.merging.checkpoints import check_out, replace_dir
from unified.model import UnifiedModel
from unified.model.quantization import SCHEMES, describe, quantize_linears, quantized_state, read_quantization
from unified.saving import TASK_OPTIONS, TASK_SOURCES

__all__ = ["DTYPES", "export", "parse_size"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int:
    """Bytes of a size written `4.5GB`, `900MB`, `2GiB` or a plain number of bytes (GB = 10^9, GiB = 2^30)."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = found.group(2).upper() if found else None
    if not found or unit not in _UNITS or float(found.group(1)) <= 0:
        raise InputError("max_size", text, "expected a size such as 4.5GB, 900MB or 2GiB")
    return int(float(found.group(1)) * _UNITS[unit])


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _human(size: int) -> str:
    return f"{size / 1e9:.3f} GB" if size >= 1e8 else f"{size / 1e6:.2f} MB"


def export(model: str | Path, out: str | Path, *, dtype: str | None = None, quantize: str | None = None,
           merge_adapters: bool = False, max_size: str | int | None = None, overwrite: bool = False) -> Path:
    """Write `model` (a saved directory) to `out` for shipping; returns `out`. See the module docstring.

    `dtype`: fp32, bf16 or fp16 for every floating weight (default: as saved, float32 when loaded);
    `quantize`: int8 or int4 weight-only linear layers of the language model (torchao);
    `merge_adapters`: fold per-task LoRA adapters into the weights, one directory per adapter under `out` (the
    model itself in `out` when it has one adapter); `max_size`: refuse, writing nothing, when the export is larger.
    """
    if dtype is not None and dtype not in DTYPES:
        raise InputError("dtype", dtype, f"expected one of {', '.join(DTYPES)}")
    if quantize is not None and quantize not in SCHEMES:
        raise InputError("quantize", quantize, f"expected one of {', '.join(SCHEMES)}")
    limit = parse_size(max_size) if max_size is not None else None
    source, out = Path(model), Path(out)
    check_out(out, overwrite)
    if (source / "config.json").is_file() and read_quantization(source):
        raise InputError("model", str(source), "is already quantised (an export): export from the unquantised model")
    if (source / "adapters").is_dir() and quantize and not merge_adapters:
        raise InputError("quantize", quantize, f"{source} carries per-task LoRA adapters: fold them into the "
                         "weights first (--merge-adapters)")
    loaded = Model.from_pretrained(source)
    adapters = getattr(loaded.network, "task_adapters", None)
    if adapters is not None and merge_adapters:
        names = list(adapters.names)
        parts = {name: (Model.from_pretrained(source) if i else loaded, name) for i, name in enumerate(names)}
    else:
        parts = {"": (loaded, None)}
    with replace_dir(out, overwrite) as tmp:
        for folder, (part, adapter) in parts.items():
            target = tmp / folder if len(parts) > 1 else tmp
            target.mkdir(parents=True, exist_ok=True)
            _write(part, adapter, target, source, dtype, quantize)
        size = _size(tmp)
        if limit is not None and size > limit:
            raise InputError("max_size", max_size, f"the export reached {_human(size)} ({size} bytes), over the "
                             f"budget of {_human(limit)}; nothing was written to {out}")
    return out


def _fold(model: Model, adapter: str) -> tuple[Any, dict[str, dict]]:
    """(a plain network with `adapter` folded into its weights, the task options of the tasks it answers)."""
    from peft.tuners.lora import LoraLayer

    adapters = model.network.task_adapters
    tasks = {t: o for t, o in model.task_options.items() if adapters.adapter_for(t) == adapter}
    for module in model.network.modules():
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=[adapter])
    plain = UnifiedModel(model.network.config)
    plain.load_state_dict(adapters.base_state_dict())
    plain.generation_config = model.network.generation_config
    return plain.eval(), tasks


def _write(model: Model, adapter: str | None, target: Path, source: Path, dtype: str | None,
           quantize: str | None) -> None:
    network, tasks = (model.network, model.task_options) if adapter is None else _fold(model, adapter)
    torch_dtype = DTYPES[dtype] if dtype else _saved_dtype(source)
    network = network.to(torch_dtype)
    record = {"dtype": _name(torch_dtype), "source": str(source), "merged_adapter": adapter}
    sources = {t: s for t, s in model.task_sources.items() if t in tasks}
    if quantize is None:
        Model(network, model.processor, tasks, sources).save_pretrained(target)
        _amend(target, {"export": record})
        return
    from safetensors.torch import save_file

    names = quantize_linears(network, quantize)
    tensors, metadata = quantized_state(network)
    network.config.save_pretrained(target)
    network.generation_config.save_pretrained(target)
    model.processor.save_pretrained(target)
    save_file(tensors, str(target / "model.safetensors"), metadata=metadata)
    if tasks:
        (target / TASK_OPTIONS).write_text(json.dumps(tasks, indent=2))
    if sources:
        (target / TASK_SOURCES).write_text(json.dumps(sources, indent=2))
    write_auto_map(target)
    _amend(target, {"export": record, "quantization": describe(quantize, names), "dtype": _name(torch_dtype)})


def _saved_dtype(source: Path) -> torch.dtype:
    saved = json.loads((source / "config.json").read_text()).get("dtype")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(saved, torch.float32)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _amend(directory: Path, entries: dict[str, Any]) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(entries)
    path.write_text(json.dumps(config, indent=2) + "\n")
