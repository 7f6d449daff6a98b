"""The text part of the vocabulary: a SentencePiece model, trained here in memory or loaded from a ``.model``.

Why a wrapper around ``SentencePieceProcessor``: SentencePiece adds a "dummy prefix" space and squeezes extra
whitespace on every ``encode`` call. That is right for one whole sentence but wrong for the pieces of text
between inline tokens: ``dog<loc_1>`` must stay glued and ``<loc_1> runs`` must keep its space. `TextModel`
therefore runs SentencePiece with both behaviours switched off and lets `UnifiedTokenizer` apply them once to
the whole string, as the model's own normaliser says. For plain text (no inline tokens) the ids are exactly
SentencePiece's.

Control pieces: SentencePiece's ``<unk>`` maps to our ``<unk>`` and its ``<s>``/``</s>``/``<pad>`` (when the
model has them, as T5's ``spiece.model`` has ``<pad>`` and ``</s>``) to ours; any other control piece gets no
id of its own (SentencePiece never emits one while encoding text). None of them is a text id, so nothing is
duplicated. Every other piece (normal, user-defined, byte, unused) is a text id, in the model's order.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator

import sentencepiece as spm
from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2

from unified.errors import InputError
from unified.tokenizers.grammar import TOKEN_RE, check_real

SPACE = "\u2581"  # SentencePiece writes a space as "▁" inside pieces
MODEL_TYPES = ("unigram", "bpe", "char", "word")
# Options train_text_tokenizer sets itself: the corpus and output plumbing, and control ids (our specials live
# outside the text model, so it keeps only <unk>).
_RESERVED_OPTIONS = {"input", "model_prefix", "sentence_iterator", "model_writer", "vocab_size", "unk_id",
                     "bos_id", "eos_id", "pad_id", "minloglevel"}
_EXTRA_SPACES = re.compile(" {2,}")


def train_text_tokenizer(texts: Iterable[str], vocab_size: int, *, model_type: str = "unigram",
                         character_coverage: float = 1.0, **options) -> bytes:
    """Train a SentencePiece model in memory and return its serialized bytes (what a ``.model`` file holds).

    `vocab_size` counts every piece of the model, its one ``<unk>`` included, so the text range of a
    `UnifiedTokenizer` built on it has ``vocab_size - 1`` ids. The model has no ``<s>``, ``</s>`` or ``<pad>``
    pieces: those are the tokenizer's own specials. Inline tokens (``<loc_3>``, ``<image>``...) are removed
    from the corpus, since they never reach SentencePiece. Training is deterministic: the same texts and
    options give the same bytes. A corpus too small for `vocab_size` raises `InputError` (SentencePiece's
    limit is exact by default); pass ``hard_vocab_limit=False`` to accept a smaller model instead. Extra
    keyword `options` go to ``SentencePieceTrainer.train`` (e.g. ``byte_fallback=True``,
    ``split_digits=True``).

    Example:
        >>> model = train_text_tokenizer(["the dog runs", "a cat sleeps"] * 50, vocab_size=17)
        >>> UnifiedTokenizer.from_sentencepiece(model).text_ids
        range(4, 20)
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise InputError("vocab_size", vocab_size, "expected an int >= 2 (the <unk> piece and one more)")
    if model_type not in MODEL_TYPES:
        raise InputError("model_type", model_type, f"expected one of {MODEL_TYPES}")
    if not 0.0 < check_real("character_coverage", character_coverage) <= 1.0:
        raise InputError("character_coverage", character_coverage, "expected a number in (0, 1]")
    for key, value in options.items():
        if key in _RESERVED_OPTIONS:
            raise InputError(key, value, "set by train_text_tokenizer itself; leave it out")
    if isinstance(texts, str):
        raise InputError("texts", texts, "expected an iterable of sentences, not one str")
    corpus = _Corpus(texts)
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=writer,
                                       vocab_size=vocab_size, model_type=model_type,
                                       character_coverage=character_coverage, unk_id=0, bos_id=-1, eos_id=-1,
                                       pad_id=-1, minloglevel=2, **options)
    except RuntimeError as err:
        if corpus.error is not None:
            raise corpus.error from None
        if corpus.count == 0:
            raise InputError("texts", "<empty>", "no sentences to train on") from None
        reason = str(err).splitlines()[0]
        if "vocab" in reason.lower():
            hint = "a small corpus supports few pieces; pass hard_vocab_limit=False to accept fewer"
            reason = f"SentencePiece could not train: {reason} ({hint})"
            raise InputError("vocab_size", vocab_size, reason) from None
        given = {"model_type": model_type, "character_coverage": character_coverage, **options}
        raise InputError("options", given, f"SentencePiece could not train: {reason}") from None
    return writer.getvalue()


class _Corpus:
    # SentencePiece turns an exception raised inside its iterator into a bare RuntimeError; keeping our own
    # error here lets train_text_tokenizer re-raise the InputError that names the bad sentence.
    def __init__(self, texts: Iterable[str]):
        self.texts, self.count, self.error = texts, 0, None

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if not isinstance(text, str):
                self.error = InputError(f"texts[{self.count}]", text, "expected a str")
                raise self.error
            self.count += 1
            yield TOKEN_RE.sub(" ", text)


class TextModel:
    """A SentencePiece model seen as the text range of the shared vocabulary.

    Text ids are numbered 0..size-1 here (`UnifiedTokenizer` shifts them); ``sp_ids[i]`` is the SentencePiece
    id of text id ``i`` and ``text_index[sp_id]`` the reverse (-1 for SentencePiece's control and unknown
    pieces). Use these to carry a pretrained embedding table (e.g. T5's) over to the shared vocabulary.

    Example:
        >>> text = TextModel(train_text_tokenizer(["the dog runs", "a cat sleeps"] * 50, vocab_size=17))
        >>> text.decode(text.encode(" the dog"))
        ' the dog'
    """

    def __init__(self, model: bytes, source: str = "<bytes>"):
        if not isinstance(model, (bytes, bytearray, memoryview)):
            raise InputError("sentencepiece model", model, "expected the model's bytes")
        proto = sentencepiece_model_pb2.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except DecodeError:
            raise InputError("sentencepiece model", source,
                             "not a SentencePiece model (cannot be parsed)") from None
        if len(proto.pieces) == 0:
            raise InputError("sentencepiece model", source, "not a SentencePiece model (it has no pieces)")
        if proto.trainer_spec.treat_whitespace_as_suffix or not proto.normalizer_spec.escape_whitespaces:
            raise InputError("sentencepiece model", source, "unsupported: spaces must be escaped as a '▁' "
                             "prefix (treat_whitespace_as_suffix=false, escape_whitespaces=true)")
        self.model_bytes = bytes(model)
        self.add_dummy_prefix = proto.normalizer_spec.add_dummy_prefix
        self.remove_extra_whitespaces = proto.normalizer_spec.remove_extra_whitespaces
        proto.normalizer_spec.add_dummy_prefix = False
        proto.normalizer_spec.remove_extra_whitespaces = False
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        except RuntimeError as err:
            reason = str(err).splitlines()[0]
            raise InputError("sentencepiece model", source,
                             f"not a usable SentencePiece model ({reason})") from None
        sp = self._sp
        self.sp_unk_id, self.sp_bos_id, self.sp_eos_id, self.sp_pad_id = (
            sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id())
        self.sp_ids = [i for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
        self.text_index = [-1] * sp.get_piece_size()
        for index, sp_id in enumerate(self.sp_ids):
            self.text_index[sp_id] = index
        space = sp.piece_to_id(SPACE)
        if sp.id_to_piece(space) != SPACE or self.text_index[space] < 0:
            raise InputError("sentencepiece model", source,
                             f"has no {SPACE!r} piece, needed to keep a space before an inline token")

    @property
    def size(self) -> int:
        """Number of text ids."""
        return len(self.sp_ids)

    def normalize(self, text: str) -> str:
        """The model's character normalisation (e.g. NFKC), whitespace as plain spaces, none removed."""
        return self._sp.normalize(text).replace(SPACE, " ")

    def squeeze(self, text: str, at_start: bool, at_end: bool) -> str:
        """Apply the model's whitespace rules to a text segment: normalise, collapse runs, strip the ends.

        Why here and not in SentencePiece: the segment may sit between inline tokens, and only the ends of the
        whole string lose their spaces.
        """
        if not self.remove_extra_whitespaces:
            return text
        text = _EXTRA_SPACES.sub(" ", self.normalize(text))
        if at_start:
            text = text.lstrip(" ")
        if at_end:
            text = text.rstrip(" ")
        return text

    def encode(self, text: str) -> list[int]:
        """SentencePiece ids of `text` exactly as written: no dummy prefix added, no whitespace removed."""
        return self._sp.encode(text) if text else []

    def decode(self, sp_ids: list[int]) -> str:
        """The inverse of `encode`: pieces joined, '▁' read as a space (byte pieces are decoded as UTF-8)."""
        return self._sp.decode(sp_ids) if sp_ids else ""

    def piece(self, sp_id: int) -> str:
        return self._sp.id_to_piece(sp_id)

    def piece_to_sp_id(self, piece: str) -> int | None:
        """SentencePiece id of a piece string, or None when the model has no such piece."""
        sp_id = self._sp.piece_to_id(piece)
        return sp_id if self._sp.id_to_piece(sp_id) == piece else None

    # Pickling keeps only the model bytes, so a tokenizer can travel to DataLoader worker processes.
    def __getstate__(self) -> dict:
        return {"model_bytes": self.model_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_bytes"])
