"""Saved models that transformers' Auto classes load in a fresh process.

Every servable directory (`unified.saving.write_servable`) gets `unified_hub.py`, a three-line module that
re-exports the classes below from the installed package, and `auto_map` entries naming it in `config.json`,
`tokenizer_config.json` and `processor_config.json`. So, with `unified` installed and nothing imported:

    AutoModelForSeq2SeqLM.from_pretrained(dir, trust_remote_code=True)   # UnifiedForConditionalGeneration
    AutoModel.from_pretrained(dir, trust_remote_code=True)               # UnifiedBaseModel (headless)
    AutoConfig.from_pretrained(dir, trust_remote_code=True)              # UnifiedConfig
    AutoTokenizer.from_pretrained(dir, trust_remote_code=True)           # UnifiedTokenizer / BackboneTokenizer
    AutoProcessor.from_pretrained(dir, trust_remote_code=True)           # UnifiedProcessor

`trust_remote_code=True` is transformers' consent to import a module from the directory; the one written here
only imports `unified` (no code of its own). After `import unified.model`, `AutoConfig` and
`AutoModelForSeq2SeqLM` work without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unified.errors import InputError
from unified.model import UnifiedBaseModel, UnifiedConfig, UnifiedForConditionalGeneration
from unified.processing import UnifiedProcessor
from unified.tokenizers.backbone import load_tokenizer

__all__ = ["AutoTokenizerEntry", "UnifiedBaseModel", "UnifiedConfig", "UnifiedForConditionalGeneration",
           "UnifiedProcessorEntry", "write_auto_map"]

SHIM = "unified_hub.py"
SHIM_TEXT = '''"""Written by unified: loads this directory with the installed `unified` package (see unified.hub)."""

from unified.hub import (  # noqa: F401  (re-exported for transformers' auto_map)
    AutoTokenizerEntry,
    UnifiedBaseModel,
    UnifiedConfig,
    UnifiedForConditionalGeneration,
    UnifiedProcessorEntry,
)
'''
AUTO_MAP_MODEL = {"AutoConfig": "unified_hub.UnifiedConfig", "AutoModel": "unified_hub.UnifiedBaseModel",
                  "AutoModelForSeq2SeqLM": "unified_hub.UnifiedForConditionalGeneration"}
AUTO_MAP_TOKENIZER = {"AutoTokenizer": ["unified_hub.AutoTokenizerEntry", None]}
AUTO_MAP_PROCESSOR = {"AutoProcessor": "unified_hub.UnifiedProcessorEntry"}
TOKENIZER_CONFIG = "tokenizer_config.json"


class _Entry:
    @classmethod
    def register_for_auto_class(cls, *args: Any, **kwargs: Any) -> None:
        """transformers calls it on classes it loaded from a directory; these are registered by the directory."""


class AutoTokenizerEntry(_Entry):
    """What `AutoTokenizer.from_pretrained(dir, trust_remote_code=True)` calls: the directory's own vocabulary
    (`unified.tokenizers.load_tokenizer`), whichever kind it is."""

    @classmethod
    def from_pretrained(cls, path: str | Path, *args: Any, **kwargs: Any) -> Any:
        return load_tokenizer(_local(path, kwargs))


class UnifiedProcessorEntry(_Entry):
    """What `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` calls: `UnifiedProcessor.from_pretrained`."""

    @classmethod
    def from_pretrained(cls, path: str | Path, *args: Any, **kwargs: Any) -> Any:
        return UnifiedProcessor.from_pretrained(_local(path, kwargs))


def _local(path: str | Path, kwargs: dict[str, Any]) -> Path:
    # transformers passes its own loading options (trust_remote_code, cache_dir, revision...): none apply to a
    # local directory, but a subfolder does
    folder = Path(path) / kwargs.get("subfolder", "")
    if not folder.is_dir():
        raise InputError("path", str(path), "not a local model directory (this vocabulary loads from disk only)")
    return folder


def write_auto_map(directory: str | Path) -> None:
    """Add the shim and the `auto_map` entries to a directory already holding config.json and the processor."""
    directory = Path(directory)
    (directory / SHIM).write_text(SHIM_TEXT)
    _merge(directory / "config.json", {"auto_map": AUTO_MAP_MODEL})
    _merge(directory / "processor_config.json", {"auto_map": AUTO_MAP_PROCESSOR})
    tokenizer_config = directory / TOKENIZER_CONFIG
    if tokenizer_config.is_file():  # a backbone's own tokenizer: its class stays, so it still loads on its own
        _merge(tokenizer_config, {"auto_map": AUTO_MAP_TOKENIZER})
    else:
        _merge(tokenizer_config, {"auto_map": AUTO_MAP_TOKENIZER, "tokenizer_class": "AutoTokenizerEntry"})


def _merge(path: Path, entries: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(entries)
    path.write_text(json.dumps(data, indent=2) + "\n")
