"""`BackboneTokenizer`: a pretrained language model's own tokenizer, its ids kept, with our ranges appended.

A pretrained text backbone (`text.pretrained_path`: T5, Flan-T5, mT5, BART, T5Gemma) has learnt one embedding row
per id of its own tokenizer, so the vocabulary that feeds it must give every text the ids that tokenizer gives.
This class wraps that tokenizer (a transformers tokenizer loaded from a local directory) and appends the ranges the
tasks write, after both the tokenizer's ids and the backbone's embedding rows (T5's table has 32,128 rows for its
32,100 ids)::

    0 .. base-1                the backbone tokenizer's ids, unchanged (its pad / eos / unk / bos included)
    base .. base+2             <image> <video> <audio>
    then N, V, I, K ids        <loc_*>, <val_*>, <int_*>, <time_*>   (sizes from the `VocabLayout`)

    base = max(len(tokenizer), rows of the backbone's embedding table)

Plain text encodes exactly as the backbone tokenizer encodes it without special tokens; inline tokens
(``"<loc_12>"``) get their appended ids. A target (`encode(text, add_eos=True)`) gets the tokenizer's own special
tokens around it, as its fine-tuning recipes do (T5: ``... </s>``; BART: ``<s> ... </s>``). `decode` writes text runs
through the tokenizer and inline tokens as their strings, with one space between a text run and a token.

    >>> tok = BackboneTokenizer.from_backbone("models/flan-t5-small")
    >>> tok.encode("where is the dog?")          # == T5's own ids for the text
    >>> tok.encode("<loc_12>")                    # [32128 + 3 + 12]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from unified.errors import InputError
from unified.local_dirs import local_dir, vocab_size_of
from unified.tokenizers.grammar import MEDIA_TOKENS, TOKEN_RE, format_token
from unified.tokenizers.layout import VocabLayout
from unified.tokenizers.ranges import NumberedRanges
from unified.tokenizers.vocabulary import UnifiedTokenizer

CONFIG_FILE = "unified_tokenizer.json"
KIND = "backbone"
RANGES = ("media", "loc", "val", "int", "time")


class BackboneTokenizer(NumberedRanges):
    """The shared vocabulary on top of a pretrained tokenizer (see the module docstring)."""

    def __init__(self, hf_tokenizer: Any, base: int, layout: VocabLayout | None = None):
        layout = layout or VocabLayout()
        if not isinstance(layout, VocabLayout):
            raise InputError("layout", layout, "expected a VocabLayout")
        if base < len(hf_tokenizer):
            raise InputError("base", base, f"below the tokenizer's {len(hf_tokenizer)} ids")
        self.hf, self.base, self.layout = hf_tokenizer, int(base), layout
        sizes = {"media": len(MEDIA_TOKENS), "loc": layout.num_loc_bins, "val": layout.num_value_bins,
                 "int": layout.num_int_tokens, "time": layout.num_time_bins}
        self.id_ranges: dict[str, range] = {}
        start = self.base
        for kind in RANGES:
            self.id_ranges[kind] = range(start, start + sizes[kind])
            start += sizes[kind]
        hf = hf_tokenizer
        self.pad_token_id = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
        self.eos_token_id, self.unk_token_id = hf.eos_token_id, hf.unk_token_id
        self.bos_token_id = hf.bos_token_id
        if self.eos_token_id is None:
            raise InputError("backbone tokenizer", type(hf).__name__, "has no eos token; a target needs one")
        self._fixed = {"</s>": self.eos_token_id, "<pad>": self.pad_token_id,
                       "<unk>": self.unk_token_id if self.unk_token_id is not None else self.pad_token_id,
                       "<s>": self.bos_token_id if self.bos_token_id is not None else self.eos_token_id,
                       **{t: self.id_ranges["media"][i] for i, t in enumerate(MEDIA_TOKENS)}}
        wrapped = hf("", add_special_tokens=True)["input_ids"]  # what the tokenizer puts around a text
        self._prefix = [wrapped[0]] if wrapped and wrapped[0] == self.bos_token_id != self.eos_token_id else []
        self._suffix = [self.eos_token_id]

    @property
    def text_stop(self) -> int:
        """One past the backbone tokenizer's own ids; rows from here to `base` are unused padding rows."""
        return len(self.hf)

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_backbone(cls, path: str | Path, layout: VocabLayout | None = None,
                      tokenizer_path: str | Path | None = None) -> BackboneTokenizer:
        """The tokenizer in `tokenizer_path` (default: the backbone's own directory `path`), its ranges appended
        after max(its ids, the backbone's embedding rows)."""
        from transformers import AutoConfig

        backbone = local_dir(path, "text.pretrained_path")
        rows = vocab_size_of(AutoConfig.from_pretrained(backbone))
        hf = _load_hf(Path(tokenizer_path) if tokenizer_path else backbone)
        return cls(hf, max(len(hf), rows), layout)

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """The wrapped tokenizer's own files plus ``unified_tokenizer.json`` (kind, base, layout)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = [Path(p) for p in self.hf.save_pretrained(directory)]
        config = {"format_version": 1, "kind": KIND, "base": self.base, "layout": self.layout.to_dict(),
                  "vocab_size": self.vocab_size}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return [*written, directory / CONFIG_FILE]

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BackboneTokenizer:
        directory = Path(directory)
        config = json.loads((directory / CONFIG_FILE).read_text())
        tokenizer = cls(_load_hf(directory), int(config["base"]), VocabLayout.from_dict(config.get("layout", {})))
        if config.get("vocab_size") not in (None, tokenizer.vocab_size):
            raise InputError(str(directory / CONFIG_FILE), config["vocab_size"],
                             f"does not match the {tokenizer.vocab_size} ids of the tokenizer and layout there")
        return tokenizer

    # ------------------------------------------------------------------ ids and ranges (the rest: NumberedRanges)
    def kind(self, token_id: int) -> str:
        """"text" for the backbone tokenizer's ids (its specials included), else the appended range's name."""
        token_id = self._check_id(token_id)
        if token_id < self.base:
            return "text"
        return next(kind for kind, ids in self.id_ranges.items() if token_id in ids)

    def id_to_token(self, token_id: int) -> str:
        kind = self.kind(token_id)
        if kind == "text":
            return self.hf.convert_ids_to_tokens(int(token_id))
        index = int(token_id) - self.id_ranges[kind].start
        return MEDIA_TOKENS[index] if kind == "media" else format_token(kind, index)

    def token_to_id(self, token: str) -> int:
        if not isinstance(token, str):
            raise InputError("token", token, "expected a str")
        inline = self._inline_id(token)
        if inline is not None:
            return inline
        token_id = self.hf.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self.unk_token_id and token != self.hf.unk_token):
            raise InputError("token", token, "not in the vocabulary")
        return int(token_id)

    # ------------------------------------------------------------------ text
    def encode(self, text: str, add_eos: bool = False, *, add_bos: bool = False) -> list[int]:
        """Ids of `text` with inline tokens; `add_eos`: a target, wrapped in the tokenizer's own special tokens."""
        if not isinstance(text, str):
            raise InputError("text", text, "expected a str")
        ids: list[int] = []
        cursor = 0
        for match in TOKEN_RE.finditer(text):
            ids += self._text(text[cursor:match.start()])
            ids.append(self._fixed[match.group(0)] if match.group(1) is None else self._numbered_id(match))
            cursor = match.end()
        ids += self._text(text[cursor:])
        if add_eos:
            ids = [*self._prefix, *ids, *self._suffix]
        elif add_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def _text(self, segment: str) -> list[int]:
        segment = segment.strip()
        return list(self.hf(segment, add_special_tokens=False)["input_ids"]) if segment else []

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text runs through the backbone tokenizer, inline tokens as their strings, one space between the two."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        parts, run = [], []
        for token_id in ids:
            token_id = self._check_id(token_id)
            if token_id < self.base:
                run.append(token_id)
                continue
            if run:
                parts.append(self.hf.decode(run, skip_special_tokens=skip_special_tokens).strip())
                run = []
            parts.append(self.id_to_token(token_id))
        if run:
            parts.append(self.hf.decode(run, skip_special_tokens=skip_special_tokens).strip())
        out = ""
        for part in parts:
            if not part:
                continue
            glued = out.endswith(">") and part.startswith("<") and TOKEN_RE.match(part) is not None
            out = part if not out else out + ("" if glued else " ") + part
        return out

    def encode_batch(self, texts: Iterable[str], add_eos: bool = False) -> list[list[int]]:
        return [self.encode(text, add_eos=add_eos) for text in texts]

    def _check_id(self, token_id: Any) -> int:
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < self.vocab_size:
            raise InputError("token id", token_id, f"expected an int in [0, {self.vocab_size})")
        return token_id


def _load_hf(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not directory.is_dir():
        raise InputError("tokenizer", str(directory), "no such directory")
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # noqa: BLE001  (transformers raises many kinds; the user gets one that names the path)
        raise InputError("tokenizer", str(directory), f"transformers could not load a tokenizer there "
                         f"({type(err).__name__}: {err})") from None


def load_tokenizer(directory: str | Path) -> Any:
    """The vocabulary saved in `directory`: a `BackboneTokenizer` or a `UnifiedTokenizer`, as its
    ``unified_tokenizer.json`` says."""
    if is_backbone_tokenizer_dir(directory):
        return BackboneTokenizer.from_pretrained(directory)
    return UnifiedTokenizer.from_pretrained(directory)


def is_backbone_tokenizer_dir(directory: str | Path) -> bool:
    """Whether `directory` holds a `BackboneTokenizer` (its ``unified_tokenizer.json`` says kind "backbone")."""
    path = Path(directory) / CONFIG_FILE
    try:
        return json.loads(path.read_text()).get("kind") == KIND
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
