"""UnifiedTokenizer: id layout, encode/decode round trip, SentencePiece control pieces, saving, errors."""

from __future__ import annotations

import json
import pickle
import random
import re
from typing import NamedTuple

import numpy as np
import pytest
import sentencepiece as spm
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unified.errors import ConfigError, InputError
from unified.tokenizers import Box, TextModel, UnifiedTokenizer, VocabLayout, train_text_tokenizer
from unified.tokenizers.grammar import TOKEN_RE

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.,?!'-<>éß"
TEXT_VOCAB = 200


def make_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences over ALPHABET; the first one holds every character so each becomes a piece."""
    rng = random.Random(seed)
    common = ["the", "a", "dog", "cat", "runs", "jumps", "over", "red", "blue", "square", "moves", "left",
              "right", "near", "far", "box", "where", "is"]
    sentences = [" ".join(ALPHABET)]
    for _ in range(n):
        words = [rng.choice(common) if rng.random() < 0.7 else
                 "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6)))
                 for _ in range(rng.randint(3, 12))]
        sentences.append(" ".join(words))
    return sentences


CORPUS = make_corpus()
# The text model's whitespace options decide what round-trips; each configuration gets its own tokenizer.
CONFIGS = {
    "unigram": {},
    "bpe": {"model_type": "bpe"},
    "keep_spaces": {"remove_extra_whitespaces": False},  # like Llama's model
    "no_dummy_prefix": {"add_dummy_prefix": False},
}


class Trained(NamedTuple):
    name: str
    model: bytes
    tok: UnifiedTokenizer

    def __repr__(self) -> str:  # hypothesis prints failing inputs; the model bytes would be 900 kB of noise
        return f"Trained({self.name!r})"


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def trained(request):
    model = train_text_tokenizer(CORPUS, TEXT_VOCAB + 1, **CONFIGS[request.param])
    return Trained(request.param, model, UnifiedTokenizer.from_sentencepiece(model))


@pytest.fixture(scope="module")
def tok():
    return UnifiedTokenizer.train(CORPUS, text_vocab_size=TEXT_VOCAB)


WORDS = st.text(alphabet=ALPHABET, min_size=1, max_size=8)
NUMBERED = st.builds(lambda kind, i: f"<{kind}_{i}>", st.sampled_from(["loc", "val", "int", "time"]),
                     st.integers(0, 99))
INLINE = st.one_of(NUMBERED, st.sampled_from(["<image>", "<video>", "<audio>", "<unk>"]))
SPECIALS = st.sampled_from(["<pad>", "<s>", "</s>"])
SKIPPED = re.compile(r"<pad>|<s>|</s>")  # letters may spell a special, which decode skips by default


@st.composite
def joined(draw, items, separators, ends=("",)):
    """Words and tokens joined by separators drawn per gap, with optional text at both ends."""
    parts = draw(st.lists(items, max_size=10))
    out = draw(st.sampled_from(ends))
    for i, part in enumerate(parts):
        out += (draw(st.sampled_from(separators)) if i else "") + part
    return out + draw(st.sampled_from(ends))


# ------------------------------------------------------------------------------------------- layout and ids
def test_hand_computed_ids_for_a_tiny_layout(tok):
    layout = VocabLayout(num_loc_bins=10, num_value_bins=8, num_int_tokens=4, num_time_bins=5)
    t = UnifiedTokenizer(tok.text_model, layout)
    T = TEXT_VOCAB
    assert (t.pad_token_id, t.eos_token_id, t.unk_token_id, t.bos_token_id) == (0, 1, 2, 3)
    assert t.text_ids == range(4, 4 + T)
    assert (t.image_token_id, t.video_token_id, t.audio_token_id) == (4 + T, 5 + T, 6 + T)
    assert t.token_to_id("<loc_0>") == 4 + T + 3 == t.loc_ids.start
    assert t.token_to_id("<loc_9>") == 4 + T + 3 + 9
    assert t.token_to_id("<val_0>") == 4 + T + 3 + 10
    assert t.token_to_id("<int_3>") == 4 + T + 3 + 10 + 8 + 3
    assert t.token_to_id("<time_4>") == 4 + T + 3 + 10 + 8 + 4 + 4
    assert t.vocab_size == len(t) == 4 + T + 3 + 10 + 8 + 4 + 5
    assert [len(r) for r in (t.loc_ids, t.val_ids, t.int_ids, t.time_ids)] == [10, 8, 4, 5]


def test_default_layout_sizes(tok):
    assert [len(r) for r in (tok.loc_ids, tok.val_ids, tok.int_ids, tok.time_ids)] == [1000, 1024, 256, 100]
    assert tok.vocab_size == 4 + TEXT_VOCAB + 3 + 1000 + 1024 + 256 + 100


def test_kind_on_the_boundaries_of_every_range(tok):
    T = TEXT_VOCAB
    expected = {0: "special", 3: "special", 4: "text", 3 + T: "text", 4 + T: "media", 6 + T: "media",
                7 + T: "loc", 1006 + T: "loc", 1007 + T: "val", 2030 + T: "val",
                2031 + T: "int", 2286 + T: "int", 2287 + T: "time", 2386 + T: "time"}
    assert {i: tok.kind(i) for i in expected} == expected
    assert tok.vocab_size == 2387 + T
    for bad in (tok.vocab_size, -1, -100):
        with pytest.raises(InputError, match=f"token id={bad}"):
            tok.kind(bad)
    assert tok.kind(np.int64(4)) == tok.kind(torch.tensor(4)) == "text"
    for bad in (1.0, True, "4"):
        with pytest.raises(InputError):
            tok.kind(bad)


def test_token_strings_round_trip_over_the_whole_vocabulary(tok):
    tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert len(set(tokens)) == tok.vocab_size
    assert [tok.token_to_id(t) for t in tokens] == list(range(tok.vocab_size))
    assert tokens[:4] == ["<pad>", "</s>", "<unk>", "<s>"]
    assert tokens[tok.image_token_id:tok.audio_token_id + 1] == ["<image>", "<video>", "<audio>"]
    assert tokens[tok.loc_ids[-1]] == "<loc_999>" and tokens[tok.time_ids[0]] == "<time_0>"
    with pytest.raises(InputError, match="not in the vocabulary"):
        tok.token_to_id("no-such-piece")
    with pytest.raises(InputError, match=r"<loc_0>\.\.<loc_999>"):
        tok.token_to_id("<loc_1000>")


def test_layout_validation_names_the_field():
    for field, value in (("num_loc_bins", 0), ("num_loc_bins", 1), ("num_value_bins", -3),
                         ("num_int_tokens", 2.5), ("num_time_bins", True), ("num_time_bins", "100")):
        with pytest.raises(ConfigError, match=field):
            VocabLayout(**{field: value})
    with pytest.raises(ConfigError, match="num_bins"):
        VocabLayout.from_dict({"num_bins": 3})
    assert VocabLayout.from_dict(VocabLayout(num_loc_bins=7).to_dict()) == VocabLayout(num_loc_bins=7)


# ------------------------------------------------------------------------------------------ encode / decode
def test_the_example_from_the_docstring(tok):
    s = "the dog <loc_12><loc_40><loc_300><loc_512> runs"
    ids = tok.encode(s)
    assert ids[-5:-1] == [tok.loc_ids[12], tok.loc_ids[40], tok.loc_ids[300], tok.loc_ids[512]]
    assert [tok.kind(i) for i in ids].count("loc") == 4
    assert tok.decode(ids) == s


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip_of_text_with_inline_tokens(trained, data):
    _, _, t = trained
    s = data.draw(joined(st.one_of(WORDS, INLINE), separators=("", " ")))
    assume(not SKIPPED.search(s))
    assert t.decode(t.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_round_trip_with_specials_when_not_skipping_them(trained, data):
    _, _, t = trained
    s = data.draw(joined(st.one_of(WORDS, INLINE, SPECIALS), separators=("", " ")))
    assert t.decode(t.encode(s), skip_special_tokens=False) == s


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_other_whitespace_is_normalised_as_the_model_says(trained, data):
    name, _, t = trained
    spaces = ("", " ", "  ", "   ")
    if name == "keep_spaces":  # the model keeps every space, so even these round-trip
        s = data.draw(joined(st.one_of(WORDS, INLINE), separators=spaces, ends=spaces))
        assume(not SKIPPED.search(s))
        assert t.decode(t.encode(s)) == s
    else:  # runs collapse, ends are stripped, tabs and newlines are spaces
        s = data.draw(joined(st.one_of(WORDS, INLINE), separators=(*spaces, "\t", "\n", " \n\t "),
                             ends=(*spaces, "\n")))
        assume(not SKIPPED.search(s))
        assert t.decode(t.encode(s)) == " ".join(s.split())


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_plain_text_ids_equal_sentencepiece_own(trained, data):
    # Independent truth: SentencePiece itself, with its dummy prefix and whitespace rules, on plain text.
    _, model, t = trained
    sp = spm.SentencePieceProcessor(model_proto=model)
    s = data.draw(joined(WORDS, separators=(" ", "  ", "\t"), ends=("", " ")))
    assume(not TOKEN_RE.search(s))  # letters may spell "<s>", which is a token, not plain text
    expected = [2 if i == sp.unk_id() else i + 3 for i in sp.encode(s)]  # its <unk> is 0; pieces shift by 3
    assert t.encode(s) == expected


def test_spaces_and_glue_around_tokens_are_kept(tok):
    for s in ("dog<loc_1>", "dog <loc_1>", "<loc_1>dog", "<loc_1> dog", "<loc_1><loc_2>", "<loc_1> <loc_2>",
              "a<<image>>b", "<video> what happens first?", "x <time_3> y<time_9>"):
        assert tok.decode(tok.encode(s)) == s
    glued, spaced = tok.encode("dog<loc_1>"), tok.encode("dog <loc_1>")
    assert len(spaced) == len(glued) + 1 and tok.id_to_token(spaced[-2]) == "\u2581"


def test_decode_drops_pads_and_bos_eos_and_keeps_unk(tok):
    body = tok.encode("the dog <loc_5>")
    ids = [tok.bos_token_id] + body + [tok.eos_token_id] + [tok.pad_token_id] * 3
    assert tok.decode(ids) == "the dog <loc_5>"
    assert tok.decode([tok.pad_token_id] * 2 + body) == "the dog <loc_5>"  # left padding too
    assert tok.decode(ids, skip_special_tokens=False) == "<s> the dog <loc_5></s><pad><pad><pad>"
    assert tok.encode("the dog <loc_5>", add_eos=True, add_bos=True) == ids[:-3]
    unk = tok.encode("the \u2603 dog")  # a snowman is not in the corpus
    assert tok.unk_token_id in unk and tok.decode(unk) == "the <unk> dog"
    assert tok.decode(torch.tensor(ids)) == tok.decode(np.array(ids)) == "the dog <loc_5>"
    assert tok.decode_batch(torch.tensor([ids, ids])) == ["the dog <loc_5>"] * 2
    assert tok.encode_batch(["a", "b"]) == [tok.encode("a"), tok.encode("b")]
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_sentencepiece_normalisation_is_applied(tok):
    assert tok.decode(tok.encode("\ufb01ne dog")) == "fine dog"  # NFKC: the ligature fi becomes two letters


def test_bad_tokens_and_ids_raise_naming_them(tok):
    with pytest.raises(InputError, match=r"token='<loc_99999>'.*<loc_0>\.\.<loc_999>"):
        tok.encode("the dog <loc_99999> runs")
    for bad in ("<val_1024>", "<int_256>", "<time_100>", "<loc_-1>", "<loc_012>", "<loc_x>", "<time_>"):
        with pytest.raises(InputError, match=re.escape(bad)):
            tok.encode(f"a {bad} b")
    with pytest.raises(InputError, match="token id=-100"):
        tok.decode([5, -100])
    with pytest.raises(InputError, match="decode_batch"):
        tok.decode([[5, 6]])
    with pytest.raises(InputError, match="text"):
        tok.encode(["not", "a", "str"])


# ----------------------------------------------------------------------------------------------- text model
def test_sentencepiece_control_pieces_map_to_our_specials(tmp_path):
    # T5's spiece.model layout: <pad>=0, </s>=1, <unk>=2, then text pieces; written to disk, loaded by path.
    path = tmp_path / "spiece.model"
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=f, vocab_size=150,
                                       pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    t = UnifiedTokenizer.from_sentencepiece(path)
    assert len(t.text_ids) == 147  # 150 pieces minus <pad>, </s>, <unk>: no duplicates
    text_tokens = {t.id_to_token(i) for i in t.text_ids}
    assert not text_tokens & {"<pad>", "</s>", "<unk>", "<s>"}
    s = "the red dog moves left"
    assert t.encode(s, add_eos=True) == [i + 1 for i in sp.encode(s)] + [t.eos_token_id]  # T5 id k -> k + 1
    assert sp.encode(s, add_eos=True)[-1] == 1 == t.eos_token_id
    # For carrying T5's embedding rows over: its <pad>, </s>, <unk> rows go to ours, piece k to row k + 1.
    assert [t.sp_id_to_id(k) for k in range(5)] == [t.pad_token_id, t.eos_token_id, t.unk_token_id, 4, 5]
    assert t.sp_id_to_id(149) == t.text_ids[-1]
    with pytest.raises(InputError, match="sentencepiece id=150"):
        t.sp_id_to_id(150)
    assert t.decode(t.encode(s)) == s


def test_from_sentencepiece_accepts_bytes_and_paths(tmp_path, tok):
    model = tok.text_model.model_bytes
    (tmp_path / "m.model").write_bytes(model)
    for source in (model, bytearray(model), tmp_path / "m.model", str(tmp_path / "m.model")):
        t = UnifiedTokenizer.from_sentencepiece(source)
        assert t.encode("the dog <image> runs") == tok.encode("the dog <image> runs")


def test_bad_sentencepiece_files_raise(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(InputError, match="nope.model.*no such file"):
        UnifiedTokenizer.from_sentencepiece(missing)
    text_file = tmp_path / "notes.model"
    text_file.write_text("this is not a sentencepiece model\n" * 20)
    with pytest.raises(InputError, match="notes.model.*not a SentencePiece model"):
        UnifiedTokenizer.from_sentencepiece(text_file)
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.model.*not a SentencePiece model"):
        UnifiedTokenizer.from_sentencepiece(empty)
    with pytest.raises(InputError, match="not a SentencePiece model"):
        UnifiedTokenizer.from_sentencepiece(b"\x00\x01\x02 junk")
    with pytest.raises(InputError):
        UnifiedTokenizer.from_sentencepiece(12345)
    with pytest.raises(InputError):
        UnifiedTokenizer.from_sentencepiece(tmp_path)  # a directory is not a model file


# ---------------------------------------------------------------------------------------------- persistence
def test_save_and_load_give_the_same_ids(tmp_path):
    layout = VocabLayout(num_loc_bins=500, num_time_bins=32)
    tok = UnifiedTokenizer.train(CORPUS, text_vocab_size=120, layout=layout)
    paths = tok.save_pretrained(tmp_path / "nested" / "tok")
    assert sorted(p.name for p in paths) == ["text.model", "unified_tokenizer.json"]
    loaded = UnifiedTokenizer.from_pretrained(tmp_path / "nested" / "tok")
    assert loaded.layout == layout and loaded.vocab_size == tok.vocab_size
    for s in [*CORPUS[:50], "the dog <loc_499><time_31> runs", "<image><audio> what?"]:
        assert loaded.encode(s, add_eos=True) == tok.encode(s, add_eos=True)
    # text.model is an ordinary SentencePiece model file
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "nested" / "tok" / "text.model"))
    assert sp.get_piece_size() == 121


def test_pickle_keeps_the_tokenizer(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("the dog <loc_3> runs") == tok.encode("the dog <loc_3> runs")
    assert isinstance(clone.text_model, TextModel)


def test_from_pretrained_errors(tmp_path, tok):
    with pytest.raises(InputError, match="no such directory"):
        UnifiedTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(InputError, match="unified_tokenizer.json"):
        UnifiedTokenizer.from_pretrained(tmp_path)
    tok.save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "text.model").unlink()
    with pytest.raises(InputError, match="text.model"):
        UnifiedTokenizer.from_pretrained(tmp_path / "a")
    tok.save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "unified_tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        UnifiedTokenizer.from_pretrained(tmp_path / "b")
    tok.save_pretrained(tmp_path / "c")
    config_path = tmp_path / "c" / "unified_tokenizer.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "vocab_size": 7}))
    with pytest.raises(InputError, match="vocab_size"):
        UnifiedTokenizer.from_pretrained(tmp_path / "c")
    config_path.write_text(json.dumps({**config, "layout": {"num_loc_bins": 10, "colour": 3}}))
    with pytest.raises(ConfigError, match="colour"):
        UnifiedTokenizer.from_pretrained(tmp_path / "c")


# ----------------------------------------------------------------------------------------- modality helpers
def test_helpers_follow_a_non_default_layout(tok):
    t = UnifiedTokenizer(tok.text_model, VocabLayout(num_loc_bins=100, num_value_bins=16, num_int_tokens=10,
                                                     num_time_bins=11))
    box = t.box_to_tokens((0, 0, 640, 480), (640, 480))
    assert box == "<loc_0><loc_0><loc_99><loc_99>"
    assert t.tokens_to_box(t.decode(t.encode("the dog " + box)), (640, 480)) == Box(0, 0, 640, 480)
    assert t.point_to_tokens((320, 0), (640, 480)) == "<loc_50><loc_0>"  # 0.5 * 99 = 49.5 rounds to even
    assert t.tokens_to_point("<loc_99><loc_0>", (640, 480)) == (640.0, 0.0)
    assert t.time_to_token(3.0, 10.0) == "<time_3>" and t.token_to_time("<time_10>", 10.0) == 10.0
    assert t.tokens_to_span(t.span_to_tokens(0.0, 5.0, 10.0), 10.0) == (0.0, 5.0)
    assert t.int_to_tokens([0, 9]) == "<int_0><int_9>" and t.tokens_to_ints("<int_9>") == [9]
    assert t.values_to_tokens(300.0) == "<val_15>"  # clipped to the last of 16 bins
    assert len(t.tokens_to_values(t.values_to_tokens([1.0, -1.0], scale=2.0), scale=2.0)) == 2
    with pytest.raises(InputError, match=r"<loc_0>\.\.<loc_99>"):
        t.encode("<loc_100>")
    with pytest.raises(InputError):
        t.int_to_tokens(10)
    with pytest.raises(InputError):
        t.tokens_to_box("<loc_100><loc_0><loc_5><loc_5>", (640, 480))
