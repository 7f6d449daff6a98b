"""The model as lmms-eval sees it: `lmms-eval --model unified --model_args pretrained=DIR,task=vqa --tasks ...`.

lmms-eval finds it through the entry point `lmms_eval.models: unified = unified.lmms_eval:manifest`
(pyproject.toml), so nothing in lmms-eval is edited. lmms-eval loads every entry point whenever it starts, so this
module stays light: the manifest names the class (`unified.lmms_eval.model.UnifiedLMM`), which lmms-eval imports,
with torch and the model stack, only when `--model unified` is asked for.
"""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_NAME = "unified"


def manifest() -> ModelManifest:
    """What the `lmms_eval.models` entry point gives lmms-eval: this model's name and class."""
    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.model.UnifiedLMM")
