"""Local model directories: what one must hold before anything is read from it, and whether it is intact.

Every loader of saved weights (our models, training checkpoints, pretrained backbones and encoders, adapters) goes
through these, so a directory of pickles, a path that is not a saved model, or a damaged file (a `.safetensors`
cut short or with a garbled header, a JSON file that does not parse, a `config.json` of another model type) is
refused the same way everywhere, with an `InputError` naming the file and what is wrong, before transformers, torch
or safetensors touch it (their own errors name neither).

    >>> local_dir("/models/t5-small", "text.pretrained_path")      # Path, or InputError naming the field
    >>> require_safetensors("/models/t5-small", "text.pretrained_path")
    >>> check_saved_model("runs/x/final", "model", model_type="unified")   # every file it holds, checked
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------------------------ damaged files
# bytes per element of each safetensors dtype (the format's own names)
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
               "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8}
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in `path`; `InputError(what, path, ...)` saying it is missing, unreadable or not valid JSON."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(what, str(path), "missing") from None
    except OSError as err:
        raise InputError(what, str(path), f"cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise InputError(what, str(path), f"damaged: not UTF-8 text (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(what, str(path), f"damaged: not valid JSON ({err.msg} at line {err.lineno}, column "
                         f"{err.colno}; the file is {len(text)} characters)") from None


def check_safetensors(path: str | Path, what: str) -> dict[str, Any]:
    """Check a `.safetensors` file's framing without reading its tensors: the 8-byte header length, the JSON header,
    every tensor's byte range against its dtype and shape, and the file's size against the last range (a file cut
    short, or with bytes after its data, is refused). Returns the header; `InputError(what, path, ...)` if damaged."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            raw = f.read(n) if n is not None and 0 < n <= min(MAX_HEADER, size - 8) else b""
    except FileNotFoundError:
        raise InputError(what, str(path), "missing") from None
    except OSError as err:
        raise InputError(what, str(path), f"cannot be read ({err.strerror})") from None
    if n is None:
        raise InputError(what, str(path), f"damaged: {size} bytes, shorter than the 8-byte header length of a "
                         "safetensors file (cut short?)")
    if not raw:
        raise InputError(what, str(path), f"damaged: its header length reads {n} bytes, but the file holds {size} "
                         "(cut short, or not a safetensors file)")
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(what, str(path), f"damaged: its header is not valid JSON ({str(err)[:80]})") from None
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in entry["data_offsets"])
            numel = 1
            for dim in entry["shape"]:
                numel *= int(dim)
        except (KeyError, TypeError, ValueError):
            raise InputError(what, str(path), f"damaged: header entry {name!r} has no valid data_offsets / "
                             "shape") from None
        width = DTYPE_BYTES.get(entry.get("dtype"))
        if stop < begin or (width is not None and (stop - begin) != numel * width):
            raise InputError(what, str(path), f"damaged: tensor {name!r} ({entry.get('dtype')}, shape "
                             f"{entry.get('shape')}) spans bytes {begin}..{stop}, which do not fit its shape")
        end = max(end, stop)
    data = size - 8 - n
    if data < end:
        raise InputError(what, str(path), f"damaged: cut short: its tensors need {end} bytes of data, the file "
                         f"holds {data} ({size} bytes in all)")
    if data > end:
        raise InputError(what, str(path), f"damaged: {data - end} bytes after its last tensor (the file is "
                         f"{size} bytes; its header accounts for {8 + n + end})")
    return header


def check_saved_model(path: str | Path, what: str, model_type: str | None = None, weights: bool = True) -> Path:
    """A saved model directory, checked before it is loaded: `config.json` (and every other JSON file there)
    parses, its `model_type` is `model_type` when given, it holds weights (`weights`: some `.safetensors`), each
    `.safetensors` file is whole (`check_safetensors`) and a sharded model's index names files that exist. Returns
    the path; `InputError(what, file, ...)` if not."""
    folder = Path(path)
    config = read_json(folder / "config.json", what) if folder.is_dir() else None
    if not isinstance(config, dict):
        if config is None:
            raise InputError(what, str(path), "not a saved model: no directory with a config.json there")
        raise InputError(what, str(folder / "config.json"), "damaged: not a JSON object")
    declared = config.get("model_type")
    if model_type is not None and declared != model_type:
        raise InputError(what, str(folder / "config.json"), f"declares model_type {declared!r}, not "
                         f"{model_type!r}: a model of another kind, which this loader cannot read")
    for file in sorted(folder.glob("*.json")):
        if file.name != "config.json":
            read_json(file, what)
    for file in sorted(folder.glob("*.safetensors.index.json")):
        shards = set((read_json(file, what).get("weight_map") or {}).values())
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise InputError(what, str(file), f"names weight files that are missing: {missing[:3]}")
    files = sorted(folder.glob("*.safetensors"))
    if weights and not files:
        raise InputError(what, str(folder), "holds no weights (no *.safetensors file; pickled weights are never "
                         "read): removed, or the save was cut short")
    for file in files:
        check_safetensors(file, what)
    return folder
