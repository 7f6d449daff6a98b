"""Per-task LoRA adapters (through peft): one adapter per task or task group, chosen by task.

    >>> adapters = TaskAdapters.attach(model, groups={"caption": "language", "vqa": "language"}, r=8)
    >>> adapters.activate("vqa")          # the "language" adapter is now the one in every LoRA layer
    >>> adapters.save("out/adapters")     # adapters/<name>/adapter_model.safetensors + adapter_config.json
    >>> TaskAdapters.load(fresh_model, "out/adapters").activate("caption")
    >>> adapters.merge("vqa")             # fold one adapter into the base weights (a single-task deployment)

peft injects its LoRA layers in place (`inject_adapter_in_model`), so the model stays a `UnifiedModel`: the training
loop, `generate` and accelerate see the same object. A LoRA-wrapped Linear keeps its weight under `base_layer`; the
base checkpoint is written without the adapters and with those names restored (`base_state_dict`), so it loads into
a plain model. Tasks not in `groups` use the adapter named after themselves; `default` (when given) catches the rest.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from unified.errors import ConfigError, InputError
from unified.local_dirs import check_safetensors, read_json
from unified.model.nf4 import quiet_import
from unified.model.quantization import save_quantized

__all__ = ["DEFAULT_TARGETS", "TaskAdapters", "load_saved_adapters", "save_model", "select_adapter"]

# attention and MLP projections of the encoder and decoder layers (not the media encoders, heads or embeddings)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# LoRA adapts the language model only. The media encoders (a pretrained SigLIP's q_proj too), the perceiver and the
# gated cross-attention (stages train those whole) and a T5Gemma 2 backbone's own vision tower share the projection
# names, so they are excluded by where they sit (a peft `exclude_modules` regex over module paths).
NOT_ADAPTED = r"(.*\.)?(media|xattn|vision_tower|multi_modal_projector)(\..*)?"
INDEX = "adapters.json"


class TaskAdapters:
    """The adapters attached to one model and the task -> adapter map."""

    def __init__(self, model: nn.Module, groups: Mapping[str, str], names: Iterable[str], settings: dict):
        self.model, self.groups, self.names, self.settings = model, dict(groups), list(names), dict(settings)
        self.active: str | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def attach(cls, model: nn.Module, tasks: Iterable[str] = (), groups: Mapping[str, str] | None = None, *,
               r: int = 8, alpha: int = 16, dropout: float = 0.0,
               target_modules: Iterable[str] = DEFAULT_TARGETS) -> TaskAdapters:
        """Inject one adapter per distinct group (a task without a group is its own group)."""
        groups = dict(groups or {})
        names = sorted({groups.get(t, t) for t in tasks} | set(groups.values()))
        if not names:
            raise ConfigError("lora", "no tasks", "give the tasks (or groups) that get adapters")
        if r < 1:
            raise ConfigError("lora.r", r, "must be a positive rank")
        settings = {"r": int(r), "alpha": int(alpha), "dropout": float(dropout),
                    "target_modules": list(target_modules)}
        for name in names:
            _inject(model, name, settings)
        adapters = cls(model, groups, names, settings)
        adapters.activate_adapter(names[0])
        model.task_adapters = adapters  # what `select_adapter` finds
        return adapters

    @classmethod
    def load(cls, model: nn.Module, directory: str | Path) -> TaskAdapters:
        """Attach the adapters saved by `save` to a plain model."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(directory)
        index_path = directory / INDEX
        if not index_path.is_file():
            raise InputError("adapters", str(directory), f"no {INDEX}: not a directory written by TaskAdapters.save")
        index = read_json(index_path, "adapters")
        try:
            adapters = cls(model, index["groups"], index["names"], index["settings"])
        except (KeyError, TypeError) as err:
            raise InputError("adapters", str(index_path), f"damaged: no valid {err} entry") from None
        for name in adapters.names:  # every file whole before any is attached
            check_safetensors(directory / name / "adapter_model.safetensors", f"adapters/{name}")
        for name in adapters.names:
            _inject(model, name, adapters.settings)
            state = load_file(str(directory / name / "adapter_model.safetensors"))
            result = set_peft_model_state_dict(model, state, adapter_name=name)
            unused = [k for k in result.unexpected_keys if "lora_" in k]
            if unused:
                raise InputError(f"adapters/{name}", unused[:3], "weights that fit no LoRA layer of this model")
        adapters.activate_adapter(adapters.names[0])
        model.task_adapters = adapters
        return adapters

    # ------------------------------------------------------------------ choosing
    def adapter_for(self, task: str) -> str:
        name = self.groups.get(task, task)
        if name not in self.names:
            name = self.groups.get("default", "default")
            if name not in self.names:
                raise InputError("task", task, f"has no adapter; adapters: {', '.join(self.names)}")
        return name

    def activate(self, task: str) -> str:
        """Make the adapter of `task` the active one in every LoRA layer; returns its name."""
        return self.activate_adapter(self.adapter_for(task))

    def activate_adapter(self, name: str) -> str:
        from peft.tuners.lora import LoraLayer

        if name not in self.names:
            raise InputError("adapter", name, f"unknown; adapters: {', '.join(self.names)}")
        if name != self.active:
            for module in self.model.modules():
                if isinstance(module, LoraLayer):
                    # peft's set_adapter also flips requires_grad to the active adapter only; training keeps every
                    # adapter's requires_grad as the stage says, so restore it
                    flags = {n: p.requires_grad for n, p in module.named_parameters() if "lora_" in n}
                    module.set_adapter(name)
                    for n, p in module.named_parameters():
                        if n in flags:
                            p.requires_grad_(flags[n])
            self.active = name
        return name

    # ------------------------------------------------------------------ saving
    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.model, adapter_name=name)

    def save(self, directory: str | Path) -> Path:
        """adapters.json (names, task groups, LoRA settings) and one folder per adapter."""
        from safetensors.torch import save_file

        directory = Path(directory)
        for name in self.names:
            (directory / name).mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().contiguous().cpu() for k, v in self.adapter_state(name).items()}
            save_file(state, str(directory / name / "adapter_model.safetensors"))
            (directory / name / "adapter_config.json").write_text(json.dumps(self.settings, indent=2))
        (directory / INDEX).write_text(json.dumps({"names": self.names, "groups": self.groups,
                                                   "settings": self.settings}, indent=2))
        return directory

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights without adapters, under a plain model's names (`x.base_layer.weight` -> `x.weight`)."""
        return {k.replace(".base_layer.", "."): v for k, v in self.model.state_dict().items() if "lora_" not in k}

    def merge(self, task: str) -> str:
        """Fold the adapter of `task` into the base weights (then every LoRA layer computes base + that adapter)."""
        from peft.tuners.lora import LoraLayer

        name = self.adapter_for(task)
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                module.merge(adapter_names=[name])
        return name


def _inject(model: nn.Module, name: str, settings: dict) -> None:
    quiet_import()  # bitsandbytes, when installed, imported offline before peft imports it
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=list(settings["target_modules"]), exclude_modules=NOT_ADAPTED, bias="none")
    try:
        with warnings.catch_warnings():  # peft warns that a second adapter is being added: that is the point here
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            warnings.filterwarnings("ignore", message="You have passed exclude_modules")  # a model without media
            # an int8 QLoRA base (`model.quantize`): adapters train and run over it; folding them in is not offered
            warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated")
            inject_adapter_in_model(config, model, adapter_name=name)
    except ValueError as exc:  # peft: no module matched target_modules
        raise ConfigError("lora.target_modules", settings["target_modules"], str(exc)) from exc


def select_adapter(model: nn.Module, task: str) -> str | None:
    """Activate `task`'s adapter when the model (or the model inside a DDP/accelerate wrapper) carries adapters."""
    core = getattr(model, "module", model)
    adapters = getattr(core, "task_adapters", None)
    return adapters.activate(task) if adapters is not None else None


def save_model(model: nn.Module, directory: str | Path, **kwargs) -> None:
    """`save_pretrained`, writing adapters (if any) to `directory/adapters` and the base weights under plain names."""
    adapters = getattr(model, "task_adapters", None)
    quantized = getattr(model.config, "quantization", None)  # a QLoRA base (`model.quantize`)
    if adapters is None:
        save_quantized(model, directory) if quantized else model.save_pretrained(directory, **kwargs)
        return
    if quantized:
        save_quantized(model, directory, adapters.base_state_dict())
    else:
        model.save_pretrained(directory, state_dict=adapters.base_state_dict(), **kwargs)
    adapters.save(Path(directory) / "adapters")


def load_saved_adapters(model: nn.Module, directory: str | Path) -> TaskAdapters | None:
    """Attach `directory/adapters` (written by `save_model`) when it exists."""
    folder = Path(directory) / "adapters"
    return TaskAdapters.load(model, folder) if (folder / INDEX).is_file() else None
