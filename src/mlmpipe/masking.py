"""Vectorized masked-LM masking in torch: token-level or whole-word, 80/10/10 replacement.

Every call takes its own ``torch.Generator``, so masks are a pure function of a seed: training
draws fresh masks from (seed, step) and evaluation draws one fixed set from its own seed.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

IGNORE = -100


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (e.g. (seed, step))."""
    h = hashlib.blake2b(",".join(map(str, keys)).encode(), digest_size=8).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(h, "little") & (2**63 - 1))
    return g


class Masker:
    """Holds what masking needs from the tokenizer: special ids, mask id, vocabulary, word starts."""

    def __init__(self, mask_id: int, vocab_size: int, special_ids, word_start: np.ndarray | None = None):
        self.mask_id, self.vocab_size = mask_id, vocab_size
        self.special = torch.zeros(max(vocab_size, max(special_ids) + 1), dtype=torch.bool)
        self.special[list(special_ids)] = True
        self.word_start = None if word_start is None else torch.from_numpy(np.asarray(word_start, dtype=bool))

    @classmethod
    def from_tokenizer(cls, tok, whole_word: bool = False) -> "Masker":
        from .tokenizer import word_start_table

        return cls(tok.mask_token_id, len(tok), tok.all_special_ids, word_start_table(tok) if whole_word else None)

    def select(self, ids: torch.Tensor, prob: float, g: torch.Generator, ensure_one: bool = True) -> torch.Tensor:
        """Bool tensor of positions to predict; special and padding tokens are never chosen."""
        special = self.special[ids]
        r = torch.rand(ids.shape, generator=g)
        if self.word_start is not None:
            # A word starts at a word-start piece, or right after a special token (or at position 0).
            starts = self.word_start[ids] | special
            starts[:, 1:] |= special[:, :-1]
            starts[:, 0] = True
            word = torch.cumsum(starts, dim=1) - 1  # word index of every token within its row
            r = r.gather(1, word)  # every piece of a word shares the word's random number
        chosen = (r < prob) & ~special
        if ensure_one and not chosen.any():  # tiny training batches: keep the loss defined
            free = (~special).flatten().nonzero().flatten()
            if len(free):
                pick = free[torch.randint(len(free), (1,), generator=g)]
                chosen.view(-1)[pick] = True
        return chosen

    def apply(self, ids: torch.Tensor, chosen: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """80% -> mask token, 10% -> random token, 10% unchanged; labels are IGNORE elsewhere."""
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        r = torch.rand(ids.shape, generator=g)
        rand_tok = torch.randint(self.vocab_size, ids.shape, generator=g, dtype=ids.dtype)
        inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_tok, inputs)
        return inputs, labels

    def __call__(self, ids: torch.Tensor, prob: float, g: torch.Generator,
                 ensure_one: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(ids, self.select(ids, prob, g, ensure_one), g)


def pad_batch(seqs: list[np.ndarray], pad_id: int, multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length examples to the longest, rounded up to ``multiple``; returns ids and attention mask."""
    longest = max(len(s) for s in seqs)
    width = -(-longest // multiple) * multiple
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)
