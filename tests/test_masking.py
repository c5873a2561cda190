"""masking.py: token-level and whole-word masking with real tokenizers, 80/10/10 replacement,
seeded generators, and padding of variable-length examples."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mlmpipe.masking import IGNORE, Masker, generator, pad_batch


def batch_of(tok, texts):
    ids, attn = pad_batch([np.asarray(tok(t)["input_ids"], dtype=np.int32) for t in texts], tok.pad_token_id)
    return ids, attn


def letters_only_texts(n, seed, vocab_words):
    """Texts of letters and spaces: known words (one piece) mixed with made-up words (several pieces)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(8, 30)):
            if rng.random() < 0.5:
                words.append(rng.choice(vocab_words))
            else:
                words.append("".join(rng.choice("abcdefghilmnoprstuvw") for _ in range(rng.randint(3, 10))))
        out.append(" ".join(words))
    return out


WORDS = ["loop", "statement", "function", "value", "returns", "the", "nearest", "enclosing", "module", "list"]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_specials_and_padding_never_masked(toks, docs, kind):
    tok = toks[kind]
    ids, attn = batch_of(tok, docs[:64])
    assert (attn == 0).any()  # there is padding in this batch
    masker = Masker.from_tokenizer(tok)
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    for seed in range(5):
        inputs, labels = masker(ids, 0.5, generator(seed))
        chosen = labels != IGNORE
        assert not (chosen & special).any()
        assert not (chosen & (attn == 0)).any()
        assert torch.equal(inputs[special], ids[special])  # specials and padding are left untouched
        assert torch.equal(labels[chosen], ids[chosen])


def test_rate_and_80_10_10(bpe_tok, docs):
    tok = bpe_tok
    ids, _ = batch_of(tok, docs)
    ids = ids.repeat(4, 1)  # ~80k positions
    masker = Masker.from_tokenizer(tok)
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    inputs, labels = masker(ids, 0.15, generator(7))
    chosen = labels != IGNORE
    rate = chosen.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01
    n = chosen.sum().item()
    assert n > 5000
    to_mask = (inputs[chosen] == tok.mask_token_id).float().mean().item()
    unchanged = (inputs[chosen] == ids[chosen]).float().mean().item()
    randomized = 1 - to_mask - unchanged
    assert abs(to_mask - 0.8) < 0.02
    assert abs(unchanged - 0.1) < 0.015
    assert abs(randomized - 0.1) < 0.015
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert int(inputs.max()) < len(tok) and int(inputs.min()) >= 0


@pytest.mark.parametrize("prob", [0.05, 0.3])
def test_rate_follows_mlm_probability(wp_tok, docs, prob):
    ids, _ = batch_of(wp_tok, docs)
    masker = Masker.from_tokenizer(wp_tok)
    special = torch.isin(ids, torch.tensor(wp_tok.all_special_ids))
    _, labels = masker(ids, prob, generator(1))
    rate = (labels != IGNORE).sum().item() / (~special).sum().item()
    assert abs(rate - prob) < 0.015


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_whole_word_masks_all_pieces_together(toks, kind):
    tok = toks[kind]
    texts = letters_only_texts(300, seed=3, vocab_words=WORDS)
    enc = tok(texts)
    ids, attn = pad_batch([np.asarray(x, dtype=np.int32) for x in enc["input_ids"]], tok.pad_token_id)
    masker = Masker.from_tokenizer(tok, whole_word=True)
    assert masker.word_start is not None
    _, labels = masker(ids, 0.15, generator(5))
    chosen = labels != IGNORE
    multi_piece_words = chosen_multi = 0
    for row in range(len(texts)):
        word_ids = enc.word_ids(row)  # the tokenizer's own word boundaries (None for specials)
        groups: dict[int, list[int]] = {}
        for pos, w in enumerate(word_ids):
            if w is not None:
                groups.setdefault(w, []).append(pos)
        for positions in groups.values():
            states = {bool(chosen[row, p]) for p in positions}
            assert len(states) == 1, (kind, tok.convert_ids_to_tokens(ids[row, positions].tolist()))
            if len(positions) > 1:
                multi_piece_words += 1
                chosen_multi += states.pop()
    assert multi_piece_words > 1000 and chosen_multi > 50
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    share = chosen.sum().item() / (~special).sum().item()
    assert abs(share - 0.15) < 0.025
    assert not (chosen & special).any()


def test_whole_word_groups_differ_from_token_level(bpe_tok):
    texts = letters_only_texts(50, seed=9, vocab_words=WORDS)
    ids, _ = batch_of(bpe_tok, texts)
    _, a = Masker.from_tokenizer(bpe_tok, whole_word=True)(ids, 0.15, generator(0))
    _, b = Masker.from_tokenizer(bpe_tok, whole_word=False)(ids, 0.15, generator(0))
    assert not torch.equal(a, b)


def test_first_piece_after_special_starts_a_word(bpe_tok):
    # BPE without a prefix space: the first word of a document has no Ġ; it must not join the specials
    # or the last word of the previous document.
    ids = torch.tensor([bpe_tok("statement loop")["input_ids"] + bpe_tok("value list")["input_ids"]])
    masker = Masker.from_tokenizer(bpe_tok, whole_word=True)
    special = masker.special[ids]
    for seed in range(40):
        _, labels = masker(ids, 0.5, generator(seed))
        chosen = labels != IGNORE
        assert not (chosen & special).any()


@pytest.mark.parametrize("whole_word", [False, True])
def test_same_seed_same_masks(wp_tok, docs, whole_word):
    ids, _ = batch_of(wp_tok, docs[:32])
    masker = Masker.from_tokenizer(wp_tok, whole_word=whole_word)
    x1, y1 = masker(ids, 0.15, generator(42, 3))
    x2, y2 = masker(ids, 0.15, generator(42, 3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3 = masker(ids, 0.15, generator(42, 4))
    assert not torch.equal(y1, y3)
    # the keys are kept apart: (1, 23) and (12, 3) are different generators
    assert generator(1, 23).initial_seed() != generator(12, 3).initial_seed()
    assert generator(1, 23).initial_seed() == generator(1, 23).initial_seed()


def test_tiny_batch_always_has_one_target(bpe_tok):
    ids = torch.tensor([[bpe_tok.cls_token_id, 100, 101, bpe_tok.sep_token_id]])
    masker = Masker.from_tokenizer(bpe_tok)
    for seed in range(20):
        _, labels = masker(ids, 0.01, generator(seed))
        assert (labels != IGNORE).sum() >= 1
        assert labels[0, 0] == IGNORE and labels[0, -1] == IGNORE
    only_specials = torch.tensor([[bpe_tok.cls_token_id, bpe_tok.sep_token_id, bpe_tok.pad_token_id]])
    _, labels = masker(only_specials, 0.5, generator(0))
    assert (labels == IGNORE).all()


def test_pad_batch_multiple_of_8():
    seqs = [np.arange(1, 4), np.arange(1, 12), np.arange(1, 9)]
    ids, attn = pad_batch(seqs, pad_id=0)
    assert ids.shape == (3, 16) and attn.shape == (3, 16)
    assert ids.dtype == torch.int64 and attn.dtype == torch.int64
    for i, s in enumerate(seqs):
        assert ids[i, :len(s)].tolist() == s.tolist()
        assert (ids[i, len(s):] == 0).all()
        assert attn[i].tolist() == [1] * len(s) + [0] * (16 - len(s))
    ids, attn = pad_batch([np.arange(8), np.arange(8)], pad_id=-1)
    assert ids.shape == (2, 8) and attn.all()
    ids, _ = pad_batch([np.arange(5)], pad_id=7, multiple=1)
    assert ids.shape == (1, 5)
