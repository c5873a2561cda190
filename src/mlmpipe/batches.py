"""What the batch of optimizer step n is: a pure function of (training split, params, seed, n).

The examples (a seeded permutation per epoch, optionally grouped by length), their cut (blocks at a
seeded random offset), their padding and their masks all come from (seed, step), so a resumed run draws
exactly the batches an uninterrupted one would, and every process draws the whole global batch.
``Batches.at`` is the one place that says so: the training loop and the benchmarks use it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .masking import IGNORE, Masker, generator, pad_batch
from .params import Pretrain


class Lengths:
    """Example lengths for length-grouped batches (``pretrain.group_by_length``); hashed by identity, so an
    epoch's order is computed once and cached."""

    def __init__(self, values):
        self.values = np.asarray(values)


def global_batches(n: int, batch: int, seed: int, step: int, lengths: Lengths | None = None) -> np.ndarray:
    """Example indices of optimizer step ``step``: a seeded permutation per epoch, last partial batch dropped.
    With ``lengths``, batches hold examples of similar length (less padding), in a seeded random order."""
    per_epoch = n // batch
    epoch, pos = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch, batch if lengths is not None else 0, lengths)[pos * batch:(pos + 1) * batch]


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int, batch: int, lengths: Lengths | None) -> np.ndarray:
    """Computed once per epoch instead of every step (it costs O(n): 390 ms at 10M blocks). With lengths, as
    the Trainer's ``group_by_length``: megabatches of 50 batches of the permutation, each sorted by length
    and cut into batches; then the batches are shuffled."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    if lengths is not None:
        mega = 50 * batch
        perm = np.concatenate([c[np.argsort(-lengths.values[c], kind="stable")]
                               for c in np.split(perm, range(mega, n, mega))])
        k = n // batch
        perm = np.concatenate([perm[:k * batch].reshape(k, batch)[rng.permutation(k)].reshape(-1), perm[k * batch:]])
    perm.flags.writeable = False
    return perm


def crop_blocks(blocks: np.ndarray, idx: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Examples of step ``step`` cut from the token stream at a seeded random offset after block ``idx``
    (``idx`` < number of blocks - 1), so each epoch sees the text cut at new places, not the same blocks."""
    width = blocks.shape[1]
    flat = blocks.reshape(-1)
    offsets = np.random.default_rng([seed, step, 7]).integers(0, width, size=len(idx))
    return flat[(idx * width + offsets)[:, None] + np.arange(width)]


@dataclass(frozen=True)
class Batch:
    """The global batch of one optimizer step, masked; every process holds all of it and trains on its rows."""
    inputs: torch.Tensor                # (batch, width) token ids, masked
    labels: torch.Tensor                # the original ids at masked positions, IGNORE elsewhere
    attention: torch.Tensor | None      # 1 on real tokens; None for blocks (no padding)
    token_types: torch.Tensor | None    # sentence pairs for a next-sentence head: segment ids
    nsp_labels: torch.Tensor | None     # ... and next-sentence labels
    masked: int                         # masked tokens: the MLM loss is their mean
    tokens: int                         # real (non-padding) tokens

    def rows(self, lo: int, size: int, device) -> tuple:
        """Rows ``lo`` to ``lo + size`` on ``device`` as ``SparseMLM``'s arguments: (inputs, attention, labels,
        keyword arguments)."""
        sl = slice(lo, lo + size)
        attention = None if self.attention is None else self.attention[sl].to(device)
        extra = {} if self.nsp_labels is None else {"token_type_ids": self.token_types[sl].to(device),
                                                    "nsp_labels": self.nsp_labels[sl].to(device)}
        return self.inputs[sl].to(device), attention, self.labels[sl].to(device), extra


class Batches:
    """The training split in one of its three layouts: blocks (an (n, block) array: ``group`` mode), examples
    of their own lengths (a list: ``line_by_line``), or sentence pairs (a list, with ``pairs`` = (segment
    ids, next-sentence labels); pass ``pairs`` only when the model learns next-sentence prediction)."""

    def __init__(self, data, masker: Masker, p: Pretrain, seed: int, pad_id: int, pairs=None):
        self.data, self.masker, self.pairs, self.seed, self.pad_id = data, masker, pairs, seed, pad_id
        self.size, self.mlm_probability = p.batch_size, p.mlm_probability
        n = len(data)  # at least p.batch_size
        self.steps_per_epoch = n // p.batch_size
        self.blocks = isinstance(data, np.ndarray)
        self.crop = self.blocks and p.random_offsets and n > p.batch_size  # the last block has no successor
        self.n = n - 1 if self.crop else n
        self.lengths = Lengths([len(x) for x in data]) if not self.blocks and p.group_by_length else None

    def indices(self, step: int) -> np.ndarray:
        """Which examples step ``step`` trains on."""
        return global_batches(self.n, self.size, self.seed, step, self.lengths)

    def at(self, step: int) -> Batch:
        """The batch of optimizer step ``step``: its examples, cut or padded, and masked from (seed, step)."""
        idx = self.indices(step)
        if self.blocks:
            rows = crop_blocks(self.data, idx, self.seed, step) if self.crop else self.data[idx]
            ids, attention = torch.from_numpy(rows.astype(np.int64)), None
        else:
            ids, attention = pad_batch([self.data[i] for i in idx], self.pad_id)
        types = nsp_labels = None
        if self.pairs is not None:
            types = pad_batch([self.pairs[0][i] for i in idx], 0)[0]
            nsp_labels = torch.from_numpy(np.asarray(self.pairs[1])[idx])
        inputs, labels = self.masker(ids, self.mlm_probability, generator(self.seed, step))
        return Batch(inputs, labels, attention, types, nsp_labels, masked=int((labels != IGNORE).sum()),
                     tokens=int(ids.numel() if attention is None else attention.sum()))
