"""evaluation.py: fixed-mask held-out metrics, checked against the full model's own loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlmpipe import evaluation as E
from mlmpipe import grouping as G
from mlmpipe import model as M
from mlmpipe.masking import IGNORE, Masker, pad_batch

from conftest import FAMILY_KIND, tiny_model_params


@pytest.fixture(scope="module")
def blocks(bpe_tok, val_docs):
    b = G.group_batch({"text": val_docs}, bpe_tok, 32)["input_ids"]
    assert len(b) >= 20
    return b


@pytest.fixture(scope="module")
def roberta(bpe_tok):
    return M.build_scratch(tiny_model_params("roberta"), bpe_tok, 32, seed=5)


def reference_loss(model, masks, pad_id, batch_size):
    """Token-weighted mean loss with the full model: HF's own loss (mean) times the batch's token count."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(masks.inputs), batch_size):
            x, attn = pad_batch(masks.inputs[lo:lo + batch_size], pad_id)
            y, _ = pad_batch(masks.labels[lo:lo + batch_size], IGNORE)
            count = int((y != IGNORE).sum())
            out = model(input_ids=x, attention_mask=attn, labels=y)
            total += out.loss.item() * count
            n += count
    return total / n, n


def test_perplexity_is_exp_of_token_weighted_loss(roberta, bpe_tok, blocks):
    masks = E.fixed_masks(blocks, Masker.from_tokenizer(bpe_tok), 0.15, seed=1234, passes=2)
    out = E.masked_lm_eval(roberta, masks, 8, bpe_tok.pad_token_id)
    ref, n = reference_loss(roberta, masks, bpe_tok.pad_token_id, 8)
    assert out["masked_tokens"] == n == sum(int((y != IGNORE).sum()) for y in masks.labels)
    assert out["loss"] == pytest.approx(ref, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(out["loss"]), rel=1e-12)
    assert 0 <= out["top1_accuracy"] <= out["top5_accuracy"] <= 1


@pytest.mark.parametrize("family", ["bert", "distilbert", "modernbert"])
def test_loss_matches_full_model_other_families(toks, family):
    tok = toks[FAMILY_KIND[family]]
    model = M.build_scratch(tiny_model_params(family), tok, 32, seed=2)
    docs = ["The break statement terminates the nearest enclosing loop.", "A module defines a new name.",
            "Calling the function returns a value and raises an exception when the list is empty."]
    rows = [np.asarray(tok(d)["input_ids"], dtype=np.int32) for d in docs]  # line_by_line: padded batches
    masks = E.fixed_masks(rows, Masker.from_tokenizer(tok), 0.3, seed=3, passes=3)
    out = E.masked_lm_eval(model, masks, 4, tok.pad_token_id)
    ref, n = reference_loss(model, masks, tok.pad_token_id, 4)
    assert out["masked_tokens"] == n
    assert out["loss"] == pytest.approx(ref, rel=1e-5)


def test_evaluate_twice_is_bit_identical(roberta, bpe_tok, blocks):
    masker = Masker.from_tokenizer(bpe_tok)
    a = E.masked_lm_eval(roberta, E.fixed_masks(blocks, masker, 0.15, seed=7, passes=2), 8, bpe_tok.pad_token_id)
    b = E.masked_lm_eval(roberta, E.fixed_masks(blocks, masker, 0.15, seed=7, passes=2), 8, bpe_tok.pad_token_id)
    assert a == b
    c = E.masked_lm_eval(roberta, E.fixed_masks(blocks, masker, 0.15, seed=8, passes=2), 8, bpe_tok.pad_token_id)
    assert c["loss"] != a["loss"]


def test_eval_restores_training_mode(roberta, bpe_tok, blocks):
    masks = E.fixed_masks(blocks[:2], Masker.from_tokenizer(bpe_tok), 0.15, seed=0)
    roberta.train()
    E.masked_lm_eval(roberta, masks, 8, bpe_tok.pad_token_id)
    assert roberta.training
    roberta.eval()
    E.masked_lm_eval(roberta, masks, 8, bpe_tok.pad_token_id)
    assert not roberta.training


def test_fixed_masks_independent_of_batch_size_and_subset(roberta, bpe_tok, blocks):
    masker = Masker.from_tokenizer(bpe_tok)
    masks = E.fixed_masks(blocks, masker, 0.15, seed=11, passes=1)
    head = E.fixed_masks(blocks[:5], masker, 0.15, seed=11, passes=1)
    for i in range(5):  # example i gets the same mask whatever else is evaluated
        np.testing.assert_array_equal(masks.inputs[i], head.inputs[i])
        np.testing.assert_array_equal(masks.labels[i], head.labels[i])
    results = [E.masked_lm_eval(roberta, masks, bs, bpe_tok.pad_token_id) for bs in (1, 3, 64)]
    for r in results[1:]:
        assert r["masked_tokens"] == results[0]["masked_tokens"]
        assert r["loss"] == pytest.approx(results[0]["loss"], rel=1e-5)
        assert r["top1_accuracy"] == results[0]["top1_accuracy"]


def test_fixed_masks_passes_draw_different_masks(bpe_tok, blocks):
    masks = E.fixed_masks(blocks, Masker.from_tokenizer(bpe_tok), 0.15, seed=1, passes=3)
    n = len(blocks)
    assert len(masks.inputs) == len(masks.labels) == 3 * n
    assert all(x.dtype == np.int64 and x.shape == (32,) for x in masks.inputs)
    assert not all(np.array_equal(masks.labels[i], masks.labels[n + i]) for i in range(n))
    for x, y, ex in zip(masks.inputs, masks.labels, list(blocks) * 3):
        chosen = y != IGNORE
        np.testing.assert_array_equal(y[chosen], ex[chosen])
        np.testing.assert_array_equal(x[~chosen], ex[~chosen])


def test_token_ranks():
    train = np.array([[5, 5, 5, 2], [2, 7, 5, 0]], dtype=np.int32)  # 5:4, 2:2, 0:1, 7:1
    ranks = E.token_ranks(train, 9)
    assert ranks.dtype == np.int64 and ranks.shape == (9,)
    assert sorted(ranks.tolist()) == list(range(9))  # a permutation
    assert ranks[5] == 0 and ranks[2] == 1
    assert ranks[0] == 2 and ranks[7] == 3  # ties: lower id first (stable)
    assert ranks[1] == 4 and ranks[8] == 8
    rows = [np.array([5, 5, 2]), np.array([5, 2, 7, 0, 5])]
    np.testing.assert_array_equal(E.token_ranks(rows, 9), ranks)


def test_by_frequency_buckets(roberta, bpe_tok, blocks):
    masks = E.fixed_masks(blocks, Masker.from_tokenizer(bpe_tok), 0.3, seed=2)
    ranks = E.token_ranks(blocks, len(bpe_tok))
    out = E.masked_lm_eval(roberta, masks, 16, bpe_tok.pad_token_id, token_rank=ranks)
    buckets = out["by_frequency"]
    assert [b["bucket"] for b in buckets] == ["rank 1-100", "rank 101-1000", "rank >1000"]
    assert sum(b["tokens"] for b in buckets) == out["masked_tokens"]
    targets = np.concatenate([y[y != IGNORE] for y in masks.labels])
    assert buckets[0]["tokens"] == int((ranks[targets] < 100).sum())
    hits = sum(b["top1"] * b["tokens"] for b in buckets)
    assert hits == pytest.approx(out["top1_accuracy"] * out["masked_tokens"])
