"""Pretrained parts from LOCAL directories: their configs travel inside ours, their weights are copied in once.

A model built on a pretrained vision tower, audio encoder or language model must load where that directory no
longer exists (another machine, a resumed run, a served checkpoint). So a part is built from its transformers
config, stored in our `config.json` (`vision.backbone`, `audio.backbone`, `text.backbone`), never by calling
`from_pretrained` inside a module's `__init__` (transformers 5 builds models on the meta device while loading, and
a nested `from_pretrained` there fails). The part's pretrained weights are copied in by
`UnifiedModel.from_pretrained_parts(config)` when a model is first built; after that they are ours, saved in our
safetensors.

    >>> backbone = read_backbone_config("/models/siglip-base-patch16-224", "vision.pretrained_path")
    >>> module = build_module(backbone, "vision.backbone")       # random weights, the right shapes
    >>> copy_weights(module, "/models/siglip-base-patch16-224", pick=vision_tower, field="vision.pretrained_path")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from unified.errors import ConfigError, InputError
from unified.local_dirs import check_saved_model, local_dir, require_safetensors

__all__ = ["build_config", "build_module", "copy_weights", "image_processor_settings", "load_local",
           "local_dir", "read_backbone_config", "vision_tower"]


def read_backbone_config(path: str | Path, field: str, part: str | None = None) -> dict[str, Any]:
    """The transformers config saved in `path` as a plain dict (its sub-config `part`, e.g. "vision_config" of a
    CLIP or SigLIP dual encoder, or of T5Gemma 2's encoder, when the model has one)."""
    from transformers import AutoConfig

    p = local_dir(path, field)
    try:
        config = AutoConfig.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # transformers raises many types for an unknown or malformed config
        raise InputError(field, str(path), f"could not read a transformers config: {exc}") from exc
    if part is not None:
        holder = config if getattr(config, part, None) is not None else getattr(config, "encoder", None)
        if holder is not None and getattr(holder, part, None) is not None:
            config = getattr(holder, part)
    return json.loads(config.to_json_string(use_diff=False))  # as config.json will hold it (id2label keys: str)


def build_config(backbone: Mapping[str, Any], field: str):
    """A transformers `PretrainedConfig` from its dict (as `read_backbone_config` returns and `config.json` stores)."""
    from transformers import CONFIG_MAPPING

    if not isinstance(backbone, Mapping) or "model_type" not in backbone:
        raise ConfigError(field, backbone, "expected a transformers config dict with a 'model_type'")
    kind = backbone["model_type"]
    if kind not in CONFIG_MAPPING:
        raise ConfigError(field, kind, "not a model type this transformers knows")
    return CONFIG_MAPPING[kind].from_dict(dict(backbone))


def build_module(backbone: Mapping[str, Any], field: str, builder: Callable | None = None) -> nn.Module:
    """The backbone with freshly initialised weights (`builder(config)`, default `AutoModel.from_config`)."""
    from transformers import AutoModel

    config = build_config(backbone, field)
    try:
        return (builder or AutoModel.from_config)(config)
    except Exception as exc:
        raise ConfigError(field, backbone.get("model_type"), f"could not build the model: {exc}") from exc


def load_local(path: str | Path, field: str, loader: Callable | None = None) -> nn.Module:
    """`loader(path)` (default `AutoModel.from_pretrained(path, local_files_only=True)`); never the network."""
    from transformers import AutoModel

    p = local_dir(path, field)
    require_safetensors(p, field)
    check_saved_model(p, field)  # damaged files named before transformers reads them
    try:
        if loader is None:
            return AutoModel.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
        return loader(str(p))
    except Exception as exc:  # transformers raises many types for a malformed checkpoint
        raise InputError(field, str(path), f"could not load a transformers model: {exc}") from exc


def vision_tower(model: nn.Module) -> nn.Module:
    """A dual encoder's (CLIP, SigLIP) vision tower, `.vision_model`; T5Gemma 2's, in its encoder
    (`.encoder.vision_tower`, a SigLIP); a vision model (CLIPVisionModel, SiglipVisionModel, DINOv2) is its own."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and getattr(encoder, "vision_tower", None) is not None:
        model = encoder.vision_tower
    return getattr(model, "vision_model", model)


def copy_weights(module: nn.Module, path: str | Path, pick: Callable[[nn.Module], nn.Module], field: str,
                 loader: Callable | None = None) -> None:
    """Copy the weights of `pick(checkpoint at path)` into `module`; every tensor must match by name and shape."""
    source = pick(load_local(path, field, loader))
    state = source.state_dict()
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise InputError(field, str(path), f"the checkpoint does not match the configured backbone: missing "
                         f"{missing[:3]}, unexpected {extra[:3]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise InputError(field, str(path), f"{name}: shape {tuple(tensor.shape)} in the checkpoint, "
                             f"{tuple(own[name].shape)} in the configured backbone")
    module.load_state_dict(state)


def image_processor_settings(path: str | Path) -> dict[str, Any]:
    """`image_mean`, `image_std` and the square `image_size` from `path/preprocessor_config.json`, if saved there
    (CLIP: mean 0.481..., std 0.268...; SigLIP: 0.5 / 0.5); {} when the directory has none."""
    file = Path(path) / "preprocessor_config.json"
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(str(file), "<json>", f"not valid JSON ({err.msg} at line {err.lineno})") from None
    out: dict[str, Any] = {}
    for key in ("image_mean", "image_std"):
        if isinstance(data.get(key), (list, tuple)) and len(data[key]) == 3:
            out[key] = tuple(float(x) for x in data[key])
    size = data.get("size") or data.get("crop_size")
    if isinstance(size, Mapping):
        size = size.get("height") or size.get("shortest_edge")
    if isinstance(size, int):
        out["image_size"] = size
    return out
