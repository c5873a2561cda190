"""tokenizer.py: real byte-level BPE and WordPiece tokenizers trained in-process on a tiny corpus,
saved in Hugging Face format and loaded back through AutoTokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from mlmpipe import corpus as C
from mlmpipe import params as P
from mlmpipe import tokenizer as T
from mlmpipe.families import FAMILIES
from mlmpipe.params import ParamError
from mlmpipe.tokenizer import TokenizerError

from corpora import make_docs

PROMPT = 'The "{}" statement terminates the nearest enclosing loop.'


def tokens(tok, text, specials=True):
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=specials)["input_ids"])


@pytest.mark.parametrize("kind,specials,template", [
    ("bpe", T.BPE_SPECIALS, ("<s>", "</s>")),
    ("wordpiece", T.WORDPIECE_SPECIALS, ("[CLS]", "[SEP]")),
])
def test_saved_tokenizer_loads_as_fast_with_specials(request, kind, specials, template):
    d = request.getfixturevalue("bpe_dir" if kind == "bpe" else "wp_dir")
    assert (d / "tokenizer.json").exists()
    tok = AutoTokenizer.from_pretrained(str(d))
    assert tok.is_fast
    assert tok.model_max_length == 128
    for attr, value in specials.items():
        assert getattr(tok, attr) == value, attr
    assert len(set(tok.all_special_ids)) == 5
    assert tok.mask_token_id is not None and tok.pad_token_id is not None
    toks = tokens(tok, "the loop")
    assert toks[0] == template[0] and toks[-1] == template[1]
    assert template[0] not in toks[1:-1] and template[1] not in toks[1:-1]
    # the pair template of the family
    pair = tok.convert_ids_to_tokens(tok("the loop", "a value")["input_ids"])
    if kind == "bpe":
        assert pair.count("</s>") == 3 and pair[0] == "<s>"          # <s> A </s></s> B </s>
    else:
        assert pair.count("[SEP]") == 2 and pair.count("[CLS]") == 1  # [CLS] A [SEP] B [SEP]
    assert T.kind_of(tok) == kind
    assert T.load(str(d)).mask_token == specials["mask_token"]


def test_bpe_mask_token_encodes_like_a_masked_word(bpe_tok):
    assert tokens(bpe_tok, "The <mask> statement", specials=False) == ["The", "<mask>", "Ġstatement"]
    assert tokens(bpe_tok, "The break statement", specials=False) == ["The", "Ġbreak", "Ġstatement"]
    masked = tokens(bpe_tok, PROMPT.format("<mask>"))
    word = tokens(bpe_tok, PROMPT.format("break"))
    assert len(masked) == len(word)
    diff = [i for i, (a, b) in enumerate(zip(masked, word)) if a != b]
    assert len(diff) == 1
    assert masked[diff[0]] == "<mask>" and word[diff[0]] == "break"
    assert "Ġ" not in masked  # no stray space token before the mask


def test_wordpiece_mask_token(wp_tok):
    masked = tokens(wp_tok, PROMPT.format("[MASK]"))
    word = tokens(wp_tok, PROMPT.format("break"))
    assert [i for i, (a, b) in enumerate(zip(masked, word)) if a != b] == [masked.index("[MASK]")]
    assert len(masked) == len(word)


def test_tokenizer_round_trips_text(bpe_tok, wp_tok, docs):
    assert bpe_tok.decode(bpe_tok(docs[0], add_special_tokens=False)["input_ids"]) == docs[0]
    ids = wp_tok(docs[0], add_special_tokens=False)["input_ids"]
    assert wp_tok.unk_token_id not in ids
    assert wp_tok.decode(ids).replace(" ", "") == docs[0].replace(" ", "")


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_lowercase_option(docs, kind, tmp_path):
    tok = T.train(iter(docs[:100]), kind, 300, 2, True, 64)
    tok.save_pretrained(tmp_path)
    tok = T.load(str(tmp_path))
    assert tok("The BREAK Statement")["input_ids"] == tok("the break statement")["input_ids"]
    mask = tok.mask_token
    assert mask in tokens(tok, f"The {mask} statement")  # special tokens are not lowercased away
    cased = T.train(iter(docs[:100]), kind, 300, 2, False, 64)
    assert cased("The")["input_ids"] != cased("the")["input_ids"]


def test_kind_of_and_check_family(bpe_tok, wp_tok):
    assert T.kind_of(bpe_tok) == "bpe"
    assert T.kind_of(wp_tok) == "wordpiece"
    for kind, family in [("bpe", "roberta"), ("bpe", "modernbert"), ("wordpiece", "modernbert"),
                         ("wordpiece", "bert"), ("wordpiece", "distilbert")]:
        P.check_family(kind, family)
    refused = [(k, f.name) for f in FAMILIES.values() for k in ("bpe", "wordpiece") if k not in f.kinds]
    assert {("wordpiece", "roberta"), ("bpe", "bert"), ("bpe", "distilbert")} <= set(refused)
    for kind, family in refused:
        with pytest.raises(ParamError) as e:
            P.check_family(kind, family)
        msg = str(e.value)
        assert "\n" not in msg
        assert f"train_tokenizer.kind = {kind!r}" in msg and f"model.family = {family!r}" in msg


def test_word_start_table_bpe(bpe_tok):
    table = T.word_start_table(bpe_tok)
    vocab = bpe_tok.get_vocab()
    assert table.dtype == bool and len(table) == max(vocab.values()) + 1
    for piece, idx in vocab.items():
        if idx in bpe_tok.all_special_ids:
            assert table[idx]
        else:
            assert table[idx] == piece.startswith("Ġ"), piece
    assert table[vocab["Ġstatement"]] and not table[vocab["."]]


def test_word_start_table_wordpiece(wp_tok):
    table = T.word_start_table(wp_tok)
    vocab = wp_tok.get_vocab()
    conts = [p for p in vocab if p.startswith("##")]
    assert conts, "the tiny WordPiece vocabulary should have continuation pieces"
    for piece, idx in vocab.items():
        assert table[idx] == (not piece.startswith("##")), piece
    assert all(table[i] for i in wp_tok.all_special_ids)


def test_stats_fields(bpe_tok, val_docs):
    s = T.stats(bpe_tok, 600, val_docs)
    assert set(s) == {"kind", "vocab_size_requested", "vocab_size", "validation_words", "validation_tokens",
                      "fertility"}
    assert s["kind"] == "bpe" and s["vocab_size_requested"] == 600 and s["vocab_size"] == len(bpe_tok)
    words = sum(len(d.split()) for d in val_docs)
    toks = sum(len(bpe_tok(d, add_special_tokens=False)["input_ids"]) for d in val_docs)
    assert s["validation_words"] == words and s["validation_tokens"] == toks
    assert s["fertility"] == round(toks / words, 4)
    assert 1.0 <= s["fertility"] < 2.0
    empty = T.stats(bpe_tok, 600, [])
    assert empty["fertility"] is None and empty["validation_tokens"] == 0


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_validation_text_never_shapes_the_vocabulary(tmp_path, kind):
    train_docs = make_docs(120, seed=11)
    val_docs = [f"The zymurgy statement zymurgy {i} quixotically zymurgy." for i in range(40)]
    C.write_corpus(iter(train_docs), tmp_path, seed=0, validation_fraction=0.0, validation_docs=iter(val_docs))
    tok = T.train(C.read_split(tmp_path, "train"), kind, 1000, 2, False, 64)
    vocab = tok.get_vocab()
    assert not any("zymurgy" in p or "quixotic" in p for p in vocab)
    # control: the same words would enter the vocabulary if validation text were used
    both = T.train(iter(train_docs + val_docs), kind, 1000, 2, False, 64)
    assert any("zymurgy" in p for p in both.get_vocab())


def test_load_refuses_non_tokenizer_dir(tmp_path):
    with pytest.raises(TokenizerError) as e:
        T.load(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_saved_files_are_standard(bpe_dir):
    cfg = json.loads((bpe_dir / "tokenizer_config.json").read_text())
    assert cfg["model_max_length"] == 128
    assert cfg["mask_token"] in ("<mask>", {"content": "<mask>"}) or "<mask>" in json.dumps(cfg["mask_token"])
    # the reloaded tokenizer's word starts, against the saved file itself: "Ġ" pieces and the special tokens
    saved = json.loads((bpe_dir / "tokenizer.json").read_text())
    vocab = saved["model"]["vocab"]
    expected = np.zeros(max(vocab.values()) + 1, dtype=bool)
    for piece, idx in vocab.items():
        expected[idx] = piece.startswith("\u0120")  # "Ġ", byte-level BPE's space
    for added in saved["added_tokens"]:
        expected[added["id"]] |= added["special"]
    assert 0 < expected.sum() < len(expected)
    np.testing.assert_array_equal(T.word_start_table(T.load(str(bpe_dir))), expected)


def test_vocab_size_below_the_byte_alphabet_is_logged(docs, caplog):
    """BPE's vocabulary starts from 256 byte symbols + 5 specials: vocab_size 64 gives 261 tokens and no word;
    the log says what was asked, what came out and why. A size that is met logs nothing."""
    with caplog.at_level("WARNING", logger="mlmpipe.tokenizer"):
        tok = T.train(iter(docs), "bpe", 64, 2, False, 64)
    assert len(tok) == 261
    lines = [r.getMessage() for r in caplog.records if r.name == "mlmpipe.tokenizer"]
    assert len(lines) == 1, lines
    assert "vocab_size = 64" in lines[0] and "261 tokens" in lines[0] and "256 byte symbols" in lines[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlmpipe.tokenizer"):
        assert len(T.train(iter(docs), "bpe", 300, 2, False, 64)) == 300
    assert not [r for r in caplog.records if r.name == "mlmpipe.tokenizer"]
