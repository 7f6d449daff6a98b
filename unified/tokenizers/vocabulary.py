"""`UnifiedTokenizer`: one id space for text, media placeholders, locations, values, integers and times.

See `unified.tokenizers.layout` for the order of the ranges. Text goes through SentencePiece (`TextModel`);
every other token is written inline in the text (``"the dog <loc_12><loc_40><loc_300><loc_512> runs"``) and
gets its own id.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from unified.errors import InputError
from unified.tokenizers.grammar import MEDIA_TOKENS, SPECIAL_TOKENS, TOKEN_RE, format_token
from unified.tokenizers.layout import VocabLayout
from unified.tokenizers.ranges import NumberedRanges
from unified.tokenizers.text import TextModel, train_text_tokenizer

CONFIG_FILE = "unified_tokenizer.json"
TEXT_MODEL_FILE = "text.model"
_FORMAT_VERSION = 1
PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, 3
KINDS = ("special", "text", "media", "loc", "val", "int", "time")


class UnifiedTokenizer(NumberedRanges):
    """The shared vocabulary: encode text with inline tokens to ids and back.

    Build one with `train`, `from_sentencepiece` (e.g. T5's ``spiece.model``) or `from_pretrained`.

    **Round trip.** ``decode(encode(s)) == s`` holds for every str ``s`` such that

    1. whitespace is normalised: single spaces only, no leading or trailing space (no tabs or newlines, which
       the normaliser turns into spaces). Inline tokens count as words: ``"dog<loc_1>"`` (glued) and
       ``"dog <loc_1>"`` (spaced) both round-trip, as do ``"<loc_1><loc_2>"`` and ``"<loc_1> <loc_2>"``;
    2. the text between tokens is unchanged by the SentencePiece model's normaliser (NFKC for most models,
       which maps "ﬁ" to "fi") and contains no literal "▁";
    3. every character is covered by the text vocabulary (else it becomes ``<unk>``), or the model has byte
       fallback;
    4. token-looking strings are valid tokens (``<loc_99999>`` raises `InputError`);
    5. with ``skip_special_tokens=True`` (the default) ``s`` holds no ``<pad>``, ``<s>``, ``</s>``; with False
       it may.

    For other strings ``encode`` first normalises exactly as the model's own ``encode`` would (for a model
    with ``remove_extra_whitespaces``, as T5's and ours, runs of spaces collapse and the ends are stripped; a
    model without it, as Llama's, keeps every space, so those strings round-trip too) and ``decode`` returns
    that normalised form. For plain text the ids equal SentencePiece's own, shifted into the text range.

    **Decoding.** ``<pad>`` (and ``<s>``, ``</s>`` when `skip_special_tokens`) are dropped wherever they are;
    ``<unk>`` is always written as ``<unk>`` so a lossy encode stays visible; every other id is written as its
    token string.

    Example:
        >>> tok = UnifiedTokenizer.train(["the dog runs", "a cat sleeps"] * 50, text_vocab_size=16)
        >>> ids = tok.encode("the dog <loc_12><loc_40><loc_300><loc_512> runs")
        >>> sorted({tok.kind(i) for i in ids})
        ['loc', 'text']
        >>> tok.decode(ids)
        'the dog <loc_12><loc_40><loc_300><loc_512> runs'
    """

    def __init__(self, text: TextModel, layout: VocabLayout | None = None):
        if layout is None:
            layout = VocabLayout()
        if not isinstance(layout, VocabLayout):
            raise InputError("layout", layout, "expected a VocabLayout")
        self.text_model, self.layout = text, layout
        sizes = {"special": len(SPECIAL_TOKENS), "text": text.size, "media": len(MEDIA_TOKENS),
                 "loc": layout.num_loc_bins, "val": layout.num_value_bins, "int": layout.num_int_tokens,
                 "time": layout.num_time_bins}
        start, self.id_ranges = 0, {}
        for kind in KINDS:
            self.id_ranges[kind] = range(start, start + sizes[kind])
            start += sizes[kind]
        self._fixed = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
        self._fixed.update(zip(MEDIA_TOKENS, self.media_ids))
        # SentencePiece id -> our id: text pieces are shifted, its control pieces become our specials.
        self._from_sp = [UNK_ID if index < 0 else self.text_ids.start + index for index in text.text_index]
        for sp_id, our_id in ((text.sp_pad_id, PAD_ID), (text.sp_eos_id, EOS_ID), (text.sp_bos_id, BOS_ID)):
            if sp_id >= 0:
                self._from_sp[sp_id] = our_id

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sentencepiece(cls, model: str | Path | bytes,
                           layout: VocabLayout | None = None) -> UnifiedTokenizer:
        """Use an existing SentencePiece model (a ``.model`` path or its bytes) as the text range."""
        if isinstance(model, (bytes, bytearray, memoryview)):
            return cls(TextModel(bytes(model)), layout)
        if not isinstance(model, (str, Path)):
            raise InputError("sentencepiece model", model, "expected a path to a .model file or its bytes")
        path = Path(model)
        if not path.is_file():
            raise InputError("sentencepiece model", str(model), "no such file")
        return cls(TextModel(path.read_bytes(), source=str(model)), layout)

    @classmethod
    def train(cls, texts: Iterable[str], text_vocab_size: int, layout: VocabLayout | None = None,
              **options: Any) -> UnifiedTokenizer:
        """Train the text range on `texts`: exactly `text_vocab_size` text ids (fewer only with
        ``hard_vocab_limit=False``); `options` as for `train_text_tokenizer` (``model_type="bpe"``...)."""
        if isinstance(text_vocab_size, bool) or not isinstance(text_vocab_size, int) or text_vocab_size < 1:
            raise InputError("text_vocab_size", text_vocab_size, "expected an int >= 1")
        try:
            model = train_text_tokenizer(texts, text_vocab_size + 1, **options)
        except InputError as err:
            if err.what != "vocab_size":
                raise
            reason = f"{err.reason}. Note: SentencePiece's vocab_size is text_vocab_size + 1 (its <unk>)"
            raise InputError("text_vocab_size", text_vocab_size, reason) from None
        return cls(TextModel(model), layout)

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write ``text.model`` (the SentencePiece bytes, usable by SentencePiece itself) and
        ``unified_tokenizer.json`` (the layout); returns the two paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_path, config_path = directory / TEXT_MODEL_FILE, directory / CONFIG_FILE
        model_path.write_bytes(self.text_model.model_bytes)
        config = {"format_version": _FORMAT_VERSION, "text_model": TEXT_MODEL_FILE,
                  "layout": self.layout.to_dict(), "vocab_size": self.vocab_size}
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        return [model_path, config_path]

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> UnifiedTokenizer:
        """Load what `save_pretrained` wrote; the result gives the same ids for the same text."""
        directory = Path(directory)
        if not directory.is_dir():
            raise InputError("tokenizer directory", str(directory), "no such directory")
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise InputError("tokenizer directory", str(directory), f"no {CONFIG_FILE} found there")
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            reason = f"not valid JSON ({err.msg} at line {err.lineno})"
            raise InputError(str(config_path), "<json>", reason) from None
        if not isinstance(config, dict) or config.get("format_version") != _FORMAT_VERSION:
            raise InputError(str(config_path), config, f"expected a JSON object with format_version "
                             f"{_FORMAT_VERSION}")
        # Only a file name is honoured, so an edited config cannot point outside the directory.
        model_path = directory / Path(str(config.get("text_model", TEXT_MODEL_FILE))).name
        if not model_path.is_file():
            raise InputError("tokenizer directory", str(directory),
                             f"no text model {model_path.name} found there")
        tokenizer = cls.from_sentencepiece(model_path, VocabLayout.from_dict(config.get("layout", {})))
        if "vocab_size" in config and config["vocab_size"] != tokenizer.vocab_size:
            raise InputError(str(config_path), config["vocab_size"],
                             f"saved vocab_size does not match the {tokenizer.vocab_size} ids of "
                             f"{model_path.name} and the layout; files mixed up?")
        return tokenizer

    # ------------------------------------------------------------------ ids and ranges
    pad_token_id, eos_token_id, unk_token_id, bos_token_id = PAD_ID, EOS_ID, UNK_ID, BOS_ID

    @property
    def special_ids(self) -> range:
        return self.id_ranges["special"]

    @property
    def text_ids(self) -> range:
        return self.id_ranges["text"]

    def kind(self, token_id: int) -> str:
        """Which range an id is in: "special", "text", "media", "loc", "val", "int" or "time"."""
        token_id = self._check_id(token_id)
        for kind, ids in self.id_ranges.items():
            if token_id in ids:
                return kind
        raise AssertionError("unreachable: the ranges cover [0, vocab_size)")

    def id_to_token(self, token_id: int) -> str:
        """The token string of an id: ``"<loc_12>"``, ``"</s>"``, or a SentencePiece piece like ``"▁dog"``."""
        kind = self.kind(token_id)
        index = int(token_id) - self.id_ranges[kind].start
        if kind == "special":
            return SPECIAL_TOKENS[index]
        if kind == "text":
            return self.text_model.piece(self.text_model.sp_ids[index])
        if kind == "media":
            return MEDIA_TOKENS[index]
        return format_token(kind, index)

    def token_to_id(self, token: str) -> int:
        """The id of a token string (special, media, numbered, or a SentencePiece piece); others raise."""
        if not isinstance(token, str):
            raise InputError("token", token, "expected a str")
        inline = self._inline_id(token)
        if inline is not None:
            return inline
        sp_id = self.text_model.piece_to_sp_id(token)
        if sp_id is None or self.text_model.text_index[sp_id] < 0:
            raise InputError("token", token, "not in the vocabulary")
        return self._from_sp[sp_id]

    def sp_id_to_id(self, sp_id: int) -> int:
        """The id of a SentencePiece id: text pieces shift into the text range, SentencePiece's ``<pad>``,
        ``</s>``, ``<s>`` and ``<unk>`` become ours (other control pieces ``<unk>``). Use it to carry a
        pretrained embedding table over, e.g. T5's: ``new_emb[tok.sp_id_to_id(k)] = t5_emb[k]``."""
        if isinstance(sp_id, bool) or not isinstance(sp_id, int) or not 0 <= sp_id < len(self._from_sp):
            raise InputError("sentencepiece id", sp_id, f"expected an int in [0, {len(self._from_sp)})")
        return self._from_sp[sp_id]

    # ------------------------------------------------------------------ text
    def encode(self, text: str, add_eos: bool = False, *, add_bos: bool = False) -> list[int]:
        """Ids of `text` with inline tokens; see the class docstring for what round-trips through `decode`."""
        if not isinstance(text, str):
            raise InputError("text", text, "expected a str")
        parts: list[str | int] = []  # text segments and ids of inline tokens, in order
        cursor = 0
        for match in TOKEN_RE.finditer(text):
            parts.append(text[cursor:match.start()])
            parts.append(self._fixed[match.group(0)] if match.group(1) is None else self._numbered_id(match))
            cursor = match.end()
        parts.append(text[cursor:])
        ids = [BOS_ID] if add_bos else []
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if isinstance(part, int):
                ids.append(part)
                continue
            segment = self.text_model.squeeze(part, at_start=i == 0, at_end=i == last)
            if i == 0 and segment and self.text_model.add_dummy_prefix:
                segment = " " + segment  # the one dummy prefix of the whole string, as SentencePiece adds it
            ids.extend(self._from_sp[sp_id] for sp_id in self.text_model.encode(segment))
        if add_eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (a list, tuple, 1-D tensor or array); pads, and bos/eos when skipping, dropped."""
        ids = self._as_id_list(ids)
        pieces: list[str] = []
        run: list[int] = []  # SentencePiece ids of consecutive text ids, decoded together for byte pieces
        text_start, sp_ids = self.text_ids.start, self.text_model.sp_ids
        for token_id in ids:
            token_id = self._check_id(token_id)
            if token_id in self.text_ids:
                run.append(sp_ids[token_id - text_start])
                continue
            if token_id == PAD_ID and skip_special_tokens:
                continue
            if skip_special_tokens and token_id in (BOS_ID, EOS_ID):
                continue
            pieces.append(self.text_model.decode(run))
            run = []
            pieces.append(self.id_to_token(token_id))
        pieces.append(self.text_model.decode(run))
        out = "".join(pieces)
        if self.text_model.add_dummy_prefix and out.startswith(" "):
            out = out[1:]  # the dummy prefix encode added (tokens never start with a space)
        return out

    def encode_batch(self, texts: Iterable[str], add_eos: bool = False, *,
                     add_bos: bool = False) -> list[list[int]]:
        return [self.encode(text, add_eos=add_eos, add_bos=add_bos) for text in texts]

    # ------------------------------------------------------------------ helpers
    def _check_id(self, token_id: Any) -> int:
        # operator.index accepts numpy and 0-d torch integers but not floats; bools are almost always a bug.
        if isinstance(token_id, bool):
            raise InputError("token id", token_id, "expected an int id, not a bool")
        try:
            token_id = operator.index(token_id)
        except TypeError:
            raise InputError("token id", token_id, "expected an int id") from None
        if not 0 <= token_id < self.vocab_size:
            raise InputError("token id", token_id, f"outside the vocabulary [0, {self.vocab_size})")
        return token_id

    @staticmethod
    def _as_id_list(ids: Any) -> list:
        # Tensors and arrays convert in one call; a 2-D batch is a mistake that decode_batch serves.
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InputError("ids", ids, "expected a 1-D sequence of token ids")
        ids = list(ids) if not isinstance(ids, list) else ids
        if any(isinstance(i, (list, tuple)) for i in ids):
            raise InputError("ids", ids, "expected a 1-D sequence of ids; use decode_batch for a batch")
        return ids

    def __repr__(self) -> str:
        spans = ", ".join(f"{kind}={r.start}..{r.stop - 1}" for kind, r in self.id_ranges.items())
        return f"UnifiedTokenizer(vocab_size={self.vocab_size}, {spans})"

