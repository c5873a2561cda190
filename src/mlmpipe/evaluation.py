"""The evaluate stage's metrics on the held-out pass of ``validation``: loss and perplexity, top-1 and top-5
accuracy, next-sentence accuracy, and accuracy by token frequency.

The loss is summed over masked tokens and divided once; perplexity = exp(loss). Only the evaluate stage
runs this module: a change here reruns evaluate, never pretrain.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .validation import FixedMasks, next_sentence, scored_batches

FREQ_BUCKETS = ((0, 100, "rank 1-100"), (100, 1000, "rank 101-1000"), (1000, 10**12, "rank >1000"))


def masked_lm_eval(model, masks: FixedMasks, batch_size: int, pad_id: int, device=None, autocast=None,
                   token_rank: np.ndarray | None = None) -> dict:
    """Sum of the loss over masked tokens, top-1/top-5 hits, and optionally accuracy by frequency bucket."""
    loss_sum, n, top1, top5, nsp_hits = 0.0, 0, 0, 0, 0
    buckets = {name: [0, 0, 0] for _, _, name in FREQ_BUCKETS}
    for b in scored_batches(model, masks, batch_size, pad_id, device, autocast):
        hit1 = b.top5[:, 0] == b.target
        hit5 = (b.top5 == b.target[:, None]).any(-1)
        loss_sum += b.loss_sum
        n += len(b.target)
        top1 += int(hit1.sum())
        top5 += int(hit5.sum())
        nsp_hits += b.nsp_hits
        if token_rank is not None:
            ranks = torch.as_tensor(token_rank)[b.target.cpu()]
            for lo, hi, name in FREQ_BUCKETS:
                inb = (ranks >= lo) & (ranks < hi)
                buckets[name][0] += int(inb.sum())
                buckets[name][1] += int((hit1.cpu() & inb).sum())
                buckets[name][2] += int((hit5.cpu() & inb).sum())
    loss = loss_sum / max(n, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "top1_accuracy": top1 / max(n, 1),
           "top5_accuracy": top5 / max(n, 1), "masked_tokens": n}
    if next_sentence(model, masks):
        out["nsp_accuracy"] = nsp_hits / max(len(masks.inputs), 1)
    if token_rank is not None:
        out["by_frequency"] = [{"bucket": name, "tokens": c, "top1": h1 / max(c, 1), "top5": h5 / max(c, 1)}
                               for name, (c, h1, h5) in buckets.items()]
    return out


def token_ranks(train_examples, vocab_size: int) -> np.ndarray:
    """Frequency rank (0 = most frequent) of every vocabulary id in the training split."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ex in (train_examples if isinstance(train_examples, list) else [train_examples.reshape(-1)]):
        counts += np.bincount(np.asarray(ex).reshape(-1), minlength=vocab_size)[:vocab_size]
    ranks = np.empty(vocab_size, dtype=np.int64)
    ranks[np.argsort(-counts, kind="stable")] = np.arange(vocab_size)
    return ranks
