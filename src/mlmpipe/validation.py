"""The held-out pass that training and evaluation share: fixed masks (the same positions in every run,
independent of training and of the batch size) and a scored forward pass over them.

Training's validation curve needs only this module; the evaluate-only metrics (perplexity, top-5, accuracy
by token frequency) live in ``evaluation``, so changing them does not invalidate the trained model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .masking import IGNORE, Masker, generator, pad_batch
from .model import encoder_outputs, has_nsp_head, mlm_logits, nsp_logits


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


def next_sentence(model, masks: FixedMasks) -> bool:
    """Whether the pass scores next-sentence prediction: sentence-pair masks and a model with that head."""
    return masks.nsp_labels is not None and has_nsp_head(model)


@dataclass(frozen=True)
class Scored:
    """One batch of the held-out pass."""
    loss_sum: float          # cross-entropy summed over the batch's masked tokens
    target: torch.Tensor     # the masked tokens' ids
    top5: torch.Tensor       # the five best guesses for each, best first
    nsp_hits: int            # right next-sentence guesses (0 unless ``next_sentence(model, masks)``)


@torch.no_grad()
def scored_batches(model, masks: FixedMasks, batch_size: int, pad_id: int, device=None,
                   autocast=None) -> Iterator[Scored]:
    """The model (in eval mode, restored after) on ``masks`` in batches of ``batch_size`` examples."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    nsp = next_sentence(model, masks)
    try:
        for start in range(0, len(masks.inputs), batch_size):
            batch = slice(start, start + batch_size)
            x, attn = pad_batch(masks.inputs[batch], pad_id)
            y, _ = pad_batch(masks.labels[batch], IGNORE)
            types = None if masks.token_types is None else pad_batch(masks.token_types[batch], 0)[0].to(device)
            full = bool(attn.all())
            x, y, attn = x.to(device), y.to(device), attn.to(device)
            hits = 0
            with autocast() if autocast else contextlib.nullcontext():
                hidden, pooled = encoder_outputs(model, x, None if full else attn, types)
                sel = y != IGNORE
                logits = mlm_logits(model, hidden[sel]).float()
                if nsp:
                    guess = nsp_logits(model, pooled).argmax(-1).cpu()
                    hits = int((guess == torch.as_tensor(masks.nsp_labels[batch])).sum())
            target = y[sel]
            yield Scored(F.cross_entropy(logits, target, reduction="sum").item(), target,
                         logits.topk(5, dim=-1).indices, hits)
    finally:
        model.train(was_training)


def validation_metrics(model, masks: FixedMasks, batch_size: int, pad_id: int) -> dict:
    """What the training curve shows: the loss per masked token, top-1 accuracy and, with a next-sentence
    head and labels, next-sentence accuracy."""
    loss_sum, n, top1, nsp_hits = 0.0, 0, 0, 0
    for b in scored_batches(model, masks, batch_size, pad_id):
        loss_sum += b.loss_sum
        n += len(b.target)
        top1 += int((b.top5[:, 0] == b.target).sum())
        nsp_hits += b.nsp_hits
    out = {"loss": loss_sum / max(n, 1), "top1_accuracy": top1 / max(n, 1)}
    if next_sentence(model, masks):
        out["nsp_accuracy"] = nsp_hits / max(len(masks.inputs), 1)
    return out
