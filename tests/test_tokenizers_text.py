"""Training the SentencePiece text model: determinism, sizes, options, and errors."""

from __future__ import annotations

import random

import pytest
import sentencepiece as spm

from unified.errors import InputError
from unified.tokenizers import TextModel, UnifiedTokenizer, train_text_tokenizer

WORDS = ["the", "a", "dog", "cat", "runs", "jumps", "over", "red", "blue", "square", "moves", "left", "right",
         "near", "far", "box", "where", "is", "small"]


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    def word():
        return rng.choice(WORDS) if rng.random() < 0.7 else "".join(rng.choices(letters, k=rng.randint(2, 6)))

    return [" ".join(word() for _ in range(rng.randint(3, 10))) for _ in range(300)]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_is_deterministic_and_sized(corpus, model_type):
    a = train_text_tokenizer(corpus, 60, model_type=model_type)
    b = train_text_tokenizer(iter(corpus), 60, model_type=model_type)  # any iterable, even a one-shot one
    assert a == b
    sp = spm.SentencePieceProcessor(model_proto=a)
    assert sp.get_piece_size() == 60 and sp.id_to_piece(0) == "<unk>"
    assert (sp.bos_id(), sp.eos_id(), sp.pad_id()) == (-1, -1, -1)  # those are the tokenizer's own specials
    assert len(UnifiedTokenizer.train(corpus, 59, model_type=model_type).text_ids) == 59


def test_model_written_to_disk_loads_by_path(tmp_path, corpus):
    path = tmp_path / "text.model"
    path.write_bytes(train_text_tokenizer(corpus, 60))
    tok = UnifiedTokenizer.from_sentencepiece(path)
    assert tok.decode(tok.encode("the dog <loc_7> runs")) == "the dog <loc_7> runs"


def test_inline_tokens_do_not_reach_the_text_model(corpus):
    model = train_text_tokenizer([s + " <loc_12><image>" for s in corpus], 60)
    text = TextModel(model)
    pieces = {text.piece(i) for i in text.sp_ids}
    assert not any("loc" in p or "image" in p for p in pieces)
    assert model == train_text_tokenizer([s + " " for s in corpus], 60)


def test_trainer_options_pass_through(corpus):
    corpus = corpus + ["12345 678 1234 12"] * 50
    plain = spm.SentencePieceProcessor(model_proto=train_text_tokenizer(corpus, 80))
    split = spm.SentencePieceProcessor(model_proto=train_text_tokenizer(corpus, 80, split_digits=True))
    assert len(plain.encode("12345")) < 5 <= len(split.encode("12345"))  # split_digits: one piece per digit


@pytest.mark.parametrize("kwargs, match", [
    ({"vocab_size": 1}, "vocab_size"), ({"vocab_size": 10_000}, "vocab_size.*SentencePiece could not train"),
    ({"vocab_size": 50.0}, "vocab_size"), ({"model_type": "wordpiece"}, "model_type"),
    ({"character_coverage": 0.0}, "character_coverage"), ({"unk_id": 3}, "unk_id"),
    ({"no_such_option": 1}, "options=.*no_such_option.*SentencePiece could not train"),
])
def test_bad_training_arguments_raise(corpus, kwargs, match):
    kwargs = {"vocab_size": 60, **kwargs}
    with pytest.raises(InputError, match=match):
        train_text_tokenizer(corpus, **kwargs)


def test_bad_corpora_raise(corpus):
    with pytest.raises(InputError, match=r"texts\[2\]=42"):
        train_text_tokenizer([*corpus[:2], 42, *corpus], 60)
    with pytest.raises(InputError, match="no sentences"):
        train_text_tokenizer([], 60)
    with pytest.raises(InputError, match="not one str"):
        train_text_tokenizer("the dog runs", 60)
    with pytest.raises(InputError, match="text_vocab_size"):
        UnifiedTokenizer.train(corpus, 0)


def test_a_corpus_too_small_for_the_vocabulary():
    tiny = ["the red square moves left", "the blue square moves right"] * 5
    with pytest.raises(InputError, match="text_vocab_size=64.*hard_vocab_limit=False"):
        UnifiedTokenizer.train(tiny, 64)
    soft = UnifiedTokenizer.train(tiny, 64, hard_vocab_limit=False)
    assert 0 < len(soft.text_ids) < 64
    assert soft.decode(soft.encode("the red square <loc_3>")) == "the red square <loc_3>"
