"""evaluation.py and validation.py: fixed-mask held-out metrics, checked against the full model's own loss and
logits; training's validation curve gives the evaluate stage's numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlmpipe import evaluation as E
from mlmpipe import grouping as G
from mlmpipe import model as M
from mlmpipe import training as TR
from mlmpipe import validation as V
from mlmpipe.masking import IGNORE, Masker, pad_batch

from conftest import FAMILY_KIND, tiny_model_params, tiny_pretrain_params
from corpora import NOUNS


@pytest.fixture(scope="module")
def blocks(bpe_tok, val_docs):
    b = G.group_batch({"text": val_docs}, bpe_tok, 32)["input_ids"]
    assert len(b) >= 20
    return b


@pytest.fixture(scope="module")
def roberta(bpe_tok):
    return M.build_scratch(tiny_model_params("roberta"), bpe_tok, 32, seed=5)


CYCLE = " ".join(NOUNS[:13])  # 13 one-token words in a fixed order: each masked word follows from its neighbours


@pytest.fixture(scope="module")
def trained(bpe_tok, tmp_path_factory):
    """A tiny RoBERTa trained 40 steps on the repeated ``CYCLE``: it predicts those words in context and
    little else, so top-1 is neither 0 nor 1 on a mix of cycle and ordinary text."""
    train = G.group_batch({"text": [CYCLE] * 300}, bpe_tok, 32)["input_ids"]
    model = M.build_scratch(tiny_model_params("roberta"), bpe_tok, 32, seed=5)
    p = tiny_pretrain_params(max_steps=40, lr=0.02, schedule="constant", log_every=10)
    model, _, _ = TR.train(model, train, train[:4], Masker.from_tokenizer(bpe_tok), p, 0, bpe_tok.pad_token_id,
                           str(tmp_path_factory.mktemp("ck")), "fp", show_progress=False)
    return model.eval(), train


@pytest.fixture(scope="module")
def mixed_blocks(bpe_tok, blocks):
    """Four blocks of cycle text, which the trained model gets right, and eight of held-out prose."""
    cycle = G.group_batch({"text": [CYCLE] * 20}, bpe_tok, 32)["input_ids"]
    return list(cycle[:4]) + list(blocks[:8])


def reference_ranks(model, masks) -> tuple[np.ndarray, np.ndarray]:
    """(target id, rank of the target among all vocabulary logits) for every masked token, from the full
    model's own forward pass, one example at a time: rank 0 is a top-1 hit, rank < 5 a top-5 hit."""
    targets, ranks = [], []
    model.eval()
    with torch.no_grad():
        for x, y in zip(masks.inputs, masks.labels):
            logits = model(input_ids=torch.as_tensor(x)[None], attention_mask=torch.ones(1, len(x))).logits[0]
            for j in np.flatnonzero(y != IGNORE):
                row, t = logits[j], int(y[j])
                targets.append(t)
                ranks.append(int((row > row[t]).sum()))
    return np.asarray(targets), np.asarray(ranks)


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
    masks = V.fixed_masks(blocks, Masker.from_tokenizer(bpe_tok), 0.15, seed=1234, passes=2)
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
    masks = V.fixed_masks(rows, Masker.from_tokenizer(tok), 0.3, seed=3, passes=3)
    out = E.masked_lm_eval(model, masks, 4, tok.pad_token_id)
    ref, n = reference_loss(model, masks, tok.pad_token_id, 4)
    assert out["masked_tokens"] == n
    assert out["loss"] == pytest.approx(ref, rel=1e-5)


def test_evaluate_twice_is_bit_identical(roberta, bpe_tok, blocks):
    masker = Masker.from_tokenizer(bpe_tok)
    a = E.masked_lm_eval(roberta, V.fixed_masks(blocks, masker, 0.15, seed=7, passes=2), 8, bpe_tok.pad_token_id)
    b = E.masked_lm_eval(roberta, V.fixed_masks(blocks, masker, 0.15, seed=7, passes=2), 8, bpe_tok.pad_token_id)
    assert a == b
    c = E.masked_lm_eval(roberta, V.fixed_masks(blocks, masker, 0.15, seed=8, passes=2), 8, bpe_tok.pad_token_id)
    assert c["loss"] != a["loss"]


def test_eval_restores_training_mode(roberta, bpe_tok, blocks):
    masks = V.fixed_masks(blocks[:2], Masker.from_tokenizer(bpe_tok), 0.15, seed=0)
    roberta.train()
    E.masked_lm_eval(roberta, masks, 8, bpe_tok.pad_token_id)
    assert roberta.training
    roberta.eval()
    E.masked_lm_eval(roberta, masks, 8, bpe_tok.pad_token_id)
    assert not roberta.training


def test_fixed_masks_independent_of_batch_size_and_subset(trained, bpe_tok, mixed_blocks):
    model, _ = trained
    masker = Masker.from_tokenizer(bpe_tok)
    masks = V.fixed_masks(mixed_blocks, masker, 0.3, seed=11, passes=2)
    head = V.fixed_masks(mixed_blocks[:5], masker, 0.3, seed=11, passes=1)
    for i in range(5):  # example i gets the same mask whatever else is evaluated
        np.testing.assert_array_equal(masks.inputs[i], head.inputs[i])
        np.testing.assert_array_equal(masks.labels[i], head.labels[i])
    targets, ranks = reference_ranks(model, masks)
    n, top1, top5 = len(targets), int((ranks == 0).sum()), int((ranks < 5).sum())
    assert 0.2 * n < top1 < top5 < n  # the model gets some, not all, right: the counts below mean something
    ref_loss, _ = reference_loss(model, masks, bpe_tok.pad_token_id, 4)
    for bs in (1, 3, 64):
        r = E.masked_lm_eval(model, masks, bs, bpe_tok.pad_token_id)
        assert r["masked_tokens"] == n, bs
        assert r["loss"] == pytest.approx(ref_loss, rel=1e-5), bs
        assert (r["top1_accuracy"], r["top5_accuracy"]) == (top1 / n, top5 / n), bs


def test_fixed_masks_passes_draw_different_masks(bpe_tok, blocks):
    masks = V.fixed_masks(blocks, Masker.from_tokenizer(bpe_tok), 0.15, seed=1, passes=3)
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


BUCKETS = (("rank 1-100", 0, 100), ("rank 101-1000", 100, 1000), ("rank >1000", 1000, np.inf))


@pytest.mark.parametrize("table", ["train_frequency", "id_mod_3"])
def test_by_frequency_buckets(trained, bpe_tok, mixed_blocks, table):
    """Accuracy per bucket matches a count from the full model's logits. ``train_frequency``: the real ranks
    of the training split (this vocabulary is too small to reach rank 1000); ``id_mod_3``: a rank table
    that puts every third id at the lower edge of each bucket (0-based ranks 0, 100, 1000), so all three
    buckets hold masked tokens and top-1 hits, and an off-by-one bucket edge shows."""
    model, train = trained
    masks = V.fixed_masks(mixed_blocks, Masker.from_tokenizer(bpe_tok), 0.3, seed=2, passes=2)
    if table == "train_frequency":
        rank_of = E.token_ranks(train, len(bpe_tok))
    else:
        rank_of = np.array([0, 100, 1000])[np.arange(len(bpe_tok)) % 3]
    out = E.masked_lm_eval(model, masks, 16, bpe_tok.pad_token_id, token_rank=rank_of)
    targets, ranks = reference_ranks(model, masks)
    expected = []
    for name, lo, hi in BUCKETS:
        inb = (rank_of[targets] >= lo) & (rank_of[targets] < hi)
        c = int(inb.sum())
        expected.append({"bucket": name, "tokens": c, "top1": int((inb & (ranks == 0)).sum()) / max(c, 1),
                         "top5": int((inb & (ranks < 5)).sum()) / max(c, 1)})
    assert out["by_frequency"] == expected
    with_hits = [b for b in expected if b["top1"] > 0]
    assert len(with_hits) >= (3 if table == "id_mod_3" else 1)  # hits to misplace: a wrong bucket shows
    assert any(b["top1"] < b["top5"] for b in expected)  # and top-5 hits beyond the top-1 ones
    assert out["top1_accuracy"] == int((ranks == 0).sum()) / len(targets) > 0.2


def test_validation_curve_metrics_are_the_evaluate_metrics(trained, bpe_tok, mixed_blocks):
    model, _ = trained
    masks = V.fixed_masks(mixed_blocks, Masker.from_tokenizer(bpe_tok), 0.3, seed=5, passes=2)
    full = E.masked_lm_eval(model, masks, 5, bpe_tok.pad_token_id)
    assert V.validation_metrics(model, masks, 5, bpe_tok.pad_token_id) == {
        "loss": full["loss"], "top1_accuracy": full["top1_accuracy"]}
