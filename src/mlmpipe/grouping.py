"""Tokenize the corpus splits and shape them into training examples.

``group`` concatenates documents (each wrapped in the family's special tokens) and cuts the stream
into fixed ``block_size`` blocks, batch by batch with NumPy (linear time, bounded memory);
``line_by_line`` keeps one document per example, truncated to ``block_size`` and padded at batch time.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import datasets
import numpy as np

from .params import MlmpipeError

log = logging.getLogger(__name__)


class GroupingError(MlmpipeError):
    pass


def _encode(texts: list[str], tokenizer, max_length: int | None, special: bool = True) -> list[list[int]]:
    backend = tokenizer.backend_tokenizer
    if max_length is not None or backend.truncation is not None or backend.padding is not None:
        # A copy: truncation/padding left in the tokenizer (tokenizer.json, or an earlier call) would cut or pad
        # documents silently; here only our own truncation applies.
        backend = backend.__class__.from_str(backend.to_str())
        backend.no_padding()
        backend.no_truncation()
        if max_length is not None:
            backend.enable_truncation(max_length)
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=special)]


def encode_batch(batch: dict, tokenizer, max_length: int | None, special: bool = True) -> dict:
    """``datasets.map`` function: one example of token ids per document (truncated if ``max_length``)."""
    ids = _encode(batch["text"], tokenizer, max_length, special)
    return {"input_ids": [np.asarray(x, dtype=np.int32) for x in ids]}


def group_batch(batch: dict, tokenizer, block_size: int) -> dict:
    """Texts -> fixed blocks of ``block_size`` ids in memory (the remainder is dropped); for small inputs."""
    ids = _encode(batch["text"], tokenizer, None)
    flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int32, count=sum(map(len, ids)))
    n = len(flat) // block_size * block_size
    return {"input_ids": flat[:n].reshape(-1, block_size)}


class Grouper:
    """``datasets.map`` function (single process, batches in order): concatenate documents and cut the
    stream into ``block_size`` blocks, carrying the remainder into the next batch (only the very last
    remainder is dropped). Works on Arrow batches, so the cost is linear in the number of tokens."""

    def __init__(self, block_size: int):
        self.block_size = block_size
        self.carry = np.zeros(0, dtype=np.int32)

    def __call__(self, batch) -> dict:
        col = batch.column("input_ids").combine_chunks()
        flat = np.concatenate([self.carry, col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)])
        n = len(flat) // self.block_size * self.block_size
        self.carry = flat[n:]
        return {"input_ids": flat[:n].reshape(-1, self.block_size)}


def tokenize_split(parquet: Path, tokenizer, mode: str, block_size: int, num_proc: int, batch_size: int,
                   scratch: Path) -> datasets.Dataset:
    """Tokenize one corpus split (a Parquet file with a ``text`` column) into a Dataset of ``input_ids``.

    Documents are encoded in parallel (``num_proc``); in ``group`` mode one ordered single-process pass
    then cuts blocks, so the result does not depend on ``num_proc``.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(scratch / "cache"))
    num_proc = max(1, min(num_proc, len(ds) // max(batch_size, 1) or 1))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if num_proc > 1 else "true")
    fp = content_fingerprint(parquet, tokenizer, mode, block_size, batch_size)
    lines = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
    docs = ds.map(encode_batch, batched=True, batch_size=batch_size, num_proc=num_proc if num_proc > 1 else None,
                  remove_columns=ds.column_names, features=lines,
                  fn_kwargs={"tokenizer": tokenizer, "max_length": block_size if mode == "line_by_line" else None,
                             "special": mode != "sentence_pairs"},
                  cache_file_name=str(scratch / f"{parquet.stem}-docs.arrow"), desc=f"tokenize {parquet.stem}",
                  new_fingerprint=fp)
    if mode == "line_by_line":
        return docs
    if mode == "sentence_pairs":
        pairs = sentence_pairs(load_blocks_from(docs), tokenizer.cls_token_id, tokenizer.sep_token_id, block_size,
                               seed=int(fp, 16) % 2**32)
        table = datasets.Dataset.from_dict(pairs, features=PAIR_FEATURES).data
        return datasets.Dataset(table, fingerprint=fp + "-p")  # from content, like the other modes
    blocks = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"), length=block_size)})
    return docs.with_format("arrow").map(
        Grouper(block_size), batched=True, batch_size=batch_size, features=blocks,
        cache_file_name=str(scratch / f"{parquet.stem}-blocks.arrow"), desc=f"group {parquet.stem}",
        new_fingerprint=fp + "-g").with_format(None)


PAIR_FEATURES = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                   "token_type_ids": datasets.Sequence(datasets.Value("int8")),
                                   "next_sentence_label": datasets.Value("int8")})


def truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths that fit ``budget`` tokens, trimming the longer segment first (as BERT's truncate_seq_pair)."""
    if la + lb <= budget:
        return la, lb
    a = min(la, max(budget // 2, budget - lb))
    return a, min(lb, budget - a)


def sentence_pairs(docs: list[np.ndarray], cls_id: int, sep_id: int, block_size: int, seed: int) -> dict:
    """BERT's next-sentence examples: every document that has a successor becomes segment A; segment B is
    that successor (label 0, IsNext) or, with probability 1/2, a random other document (label 1, NotNext).
    ``[CLS] A [SEP] B [SEP]``, trimmed to ``block_size``; seeded, so the pairs are the same in every run."""
    docs = [d for d in docs if len(d)]
    rng = np.random.default_rng([seed, 0x4E5350])
    ids, types, labels = [], [], []
    n = len(docs)
    for i in range(n - 1):
        j, label = i + 1, 0
        if n > 2 and rng.random() < 0.5:
            k = int(rng.integers(0, n - 2))  # any document but i and its successor
            j, label = (k if k < i else k + 2), 1
        la, lb = truncate_pair(len(docs[i]), len(docs[j]), block_size - 3)
        ids.append(np.concatenate([[cls_id], docs[i][:la], [sep_id], docs[j][:lb], [sep_id]]).astype(np.int32))
        types.append(np.repeat(np.array([0, 1], dtype=np.int8), [la + 2, lb + 1]))
        labels.append(label)
    return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": labels}


def content_fingerprint(parquet: Path, tokenizer, *settings) -> str:
    """The saved split's ``_fingerprint`` (in state.json), from what determines its content only.

    datasets' default derives it from the source file's absolute path and mtime, so the same corpus
    and tokenizer gave a different state.json in another checkout, or after the corpus was checked
    out or rewritten again, and DVC saw a changed output (and reran pretrain) where nothing had changed.
    """
    h = hashlib.sha256()
    with open(parquet, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    h.update(tokenizer.backend_tokenizer.to_str().encode("utf-8"))
    h.update(repr(settings).encode("utf-8"))
    return h.hexdigest()[:16]


def split_stats(ds: datasets.Dataset, block_size: int) -> dict:
    """Examples, real tokens, and the padding fraction if every example were padded to ``block_size``."""
    tokens = 0
    for batch in ds.data.column("input_ids").chunks:
        tokens += len(batch.values)
    examples = len(ds)
    pad = 1 - tokens / (examples * block_size) if examples else 0.0
    return {"examples": examples, "tokens": tokens, "padding_fraction": round(pad, 6)}


def save_split(ds: datasets.Dataset, dest: Path) -> None:
    ds.save_to_disk(str(dest))


def clear_scratch(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)


def load_split(path: str | os.PathLike) -> tuple[list[np.ndarray] | np.ndarray,
                                               tuple[list[np.ndarray], np.ndarray] | None]:
    """Load a tokenized split once: ``(blocks, pairs)``. ``blocks`` is an ``(N, block_size)`` int32 array
    for ``group`` mode, or a list of 1-D arrays for ``line_by_line`` and ``sentence_pairs``; ``pairs`` is
    (segment ids, next-sentence labels) for ``sentence_pairs``, else None."""
    ds = datasets.load_from_disk(str(path))
    if "next_sentence_label" not in ds.column_names:
        return load_blocks_from(ds), None
    labels = ds.data.column("next_sentence_label").to_numpy().astype(np.int64)
    return load_blocks_from(ds), (load_blocks_from(ds, "token_type_ids"), labels)


def load_blocks(path: str | os.PathLike) -> list[np.ndarray] | np.ndarray:
    """The token blocks of a tokenized split (see ``load_split``), without its next-sentence pairs."""
    return load_blocks_from(datasets.load_from_disk(str(path)))


def load_blocks_from(ds: datasets.Dataset, column: str = "input_ids") -> list[np.ndarray] | np.ndarray:
    col = ds.data.column(column).combine_chunks()
    if hasattr(col.type, "list_size"):
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False).reshape(-1, col.type.list_size)
    values = col.values.to_numpy(zero_copy_only=False)
    if column == "input_ids":
        values = values.astype(np.int32, copy=False)
    offsets = col.offsets.to_numpy()
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]

