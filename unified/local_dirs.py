"""Local model directories: what one must hold before anything is read from it.

Every loader of saved weights (our models, pretrained backbones and encoders, adapters) goes through these, so a
directory of pickles or a path that is not a saved model is refused the same way everywhere, before transformers
or torch touch it.

    >>> local_dir("/models/t5-small", "text.pretrained_path")      # Path, or InputError naming the field
    >>> require_safetensors("/models/t5-small", "text.pretrained_path")
"""

from __future__ import annotations

from pathlib import Path

from unified.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # formats that can run code when loaded


def local_dir(path: str | Path, field: str) -> Path:
    """`path` as a directory holding a saved transformers model; `InputError` naming `field` and the path if not."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise InputError(field, str(path), "not a local directory holding a saved transformers model (config.json)")
    return p


def require_safetensors(path: str | Path, what: str) -> None:
    """Refuse a model directory whose weights exist only in a pickle format (`pytorch_model.bin`...): loading one
    can run code. `InputError` naming the directory, the files and the way out."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise InputError(what, str(path), f"holds weights only as pickle ({', '.join(pickled)}), which can run code "
                         "when loaded; only safetensors are read. Convert them where the source is trusted: "
                         "model.save_pretrained(dir, safe_serialization=True)")


def vocab_size_of(cfg) -> int:
    """A transformers encoder-decoder config's output vocabulary: T5Gemma's decoder sub-config's, else its own."""
    return int(getattr(getattr(cfg, "decoder", None), "vocab_size", None) or cfg.vocab_size)
