"""Held-out evaluation with fixed masks: the same positions in every run, independent of training.

The loss is summed over masked tokens and divided once; perplexity = exp(loss).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .masking import IGNORE, Masker, generator, pad_batch
from .model import encoder_outputs, has_nsp_head, mlm_logits, nsp_logits

FREQ_BUCKETS = ((0, 100, "rank 1-100"), (100, 1000, "rank 101-1000"), (1000, 10**12, "rank >1000"))


@dataclass(frozen=True)
class FixedMasks:
    """Masked inputs and labels for each evaluation example (one entry per example and pass); for sentence
    pairs also the segment ids and next-sentence labels."""
    inputs: list
    labels: list
    token_types: list | None = None
    nsp_labels: np.ndarray | None = None


def fixed_masks(examples, masker: Masker, prob: float, seed: int, passes: int = 1,
                pairs: tuple[list, np.ndarray] | None = None) -> FixedMasks:
    """Draw masks once per (pass, example) from ``seed``: independent of batch size and of training.
    ``pairs`` = (segment ids, next-sentence labels) of ``examples``, as ``grouping.load_split`` returns."""
    inputs, labels = [], []
    for p in range(passes):
        for i, ex in enumerate(examples):
            ids = torch.as_tensor(np.asarray(ex, dtype=np.int64)).unsqueeze(0)
            x, y = masker(ids, prob, generator(seed, p, i), ensure_one=False)  # no forced mask per example
            inputs.append(x[0].numpy())
            labels.append(y[0].numpy())
    if pairs is None:
        return FixedMasks(inputs, labels)
    n = len(examples)
    return FixedMasks(inputs, labels, list(pairs[0][:n]) * passes, np.tile(np.asarray(pairs[1][:n]), passes))


@torch.no_grad()
def masked_lm_eval(model, masks: FixedMasks, batch_size: int, pad_id: int, device=None, autocast=None,
                   token_rank: np.ndarray | None = None) -> dict:
    """Sum of the loss over masked tokens, top-1/top-5 hits, and optionally accuracy by frequency bucket."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, n, top1, top5, nsp_hits = 0.0, 0, 0, 0, 0
    buckets = {name: [0, 0, 0] for _, _, name in FREQ_BUCKETS}
    nsp = masks.nsp_labels is not None and has_nsp_head(model)
    for start in range(0, len(masks.inputs), batch_size):
        batch = slice(start, start + batch_size)
        x, attn = pad_batch(masks.inputs[batch], pad_id)
        y, _ = pad_batch(masks.labels[batch], IGNORE)
        types = None if masks.token_types is None else pad_batch(masks.token_types[batch], 0)[0].to(device)
        full = bool(attn.all())
        x, y, attn = x.to(device), y.to(device), attn.to(device)
        with autocast() if autocast else contextlib.nullcontext():
            hidden, pooled = encoder_outputs(model, x, None if full else attn, types)
            sel = y != IGNORE
            logits = mlm_logits(model, hidden[sel]).float()
            if nsp:
                guess = nsp_logits(model, pooled).argmax(-1).cpu()
                nsp_hits += int((guess == torch.as_tensor(masks.nsp_labels[batch])).sum())
        target = y[sel]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        best = logits.topk(5, dim=-1).indices
        hit1 = best[:, 0] == target
        hit5 = (best == target[:, None]).any(-1)
        n += len(target)
        top1 += int(hit1.sum())
        top5 += int(hit5.sum())
        if token_rank is not None:
            ranks = torch.as_tensor(token_rank)[target.cpu()]
            for lo, hi, name in FREQ_BUCKETS:
                inb = (ranks >= lo) & (ranks < hi)
                buckets[name][0] += int(inb.sum())
                buckets[name][1] += int((hit1.cpu() & inb).sum())
                buckets[name][2] += int((hit5.cpu() & inb).sum())
    model.train(was_training)
    loss = loss_sum / max(n, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "top1_accuracy": top1 / max(n, 1),
           "top5_accuracy": top5 / max(n, 1), "masked_tokens": n}
    if nsp:
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
