"""Cleaning and the seeded train/validation split by document (the sources are in ``sources``).

Everything streams: documents flow from the source through cleaning into Parquet writers in
batches, so memory stays bounded on corpora of hundreds of megabytes.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .sources import CorpusError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
_WRITE_BATCH = 10_000


def clean(docs: Iterable[str], min_chars: int, dedupe: bool, max_documents: Optional[int],
          seen: Optional[set] = None) -> Iterator[str]:
    """Strip, drop short documents, drop exact duplicates, stop after ``max_documents``.

    ``seen``: a set shared between several calls, so a document is kept once across all of them."""
    seen = set() if seen is None else seen
    kept = 0
    for doc in docs:
        doc = doc.strip()
        if len(doc) < max(min_chars, 1):
            continue
        if dedupe:
            key = hashlib.blake2b(doc.encode("utf-8"), digest_size=16).digest()
            if key in seen:
                continue
            seen.add(key)
        yield doc
        kept += 1
        if max_documents is not None and kept >= max_documents:
            return


def is_validation(doc: str, seed: int, fraction: float) -> bool:
    """Seeded split by document content: stable when documents are added, removed or reordered."""
    if fraction <= 0:
        return False
    h = hashlib.blake2b(f"{seed}\x00{doc}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


class _SplitWriter:
    """Streams documents of one split into ``<dir>/<split>.parquet`` and keeps running stats."""

    def __init__(self, path: Path):
        self.path, self.buf, self.writer = path, [], None
        self.documents = self.characters = self.bytes = 0
        self.hash = hashlib.sha256()

    def add(self, doc: str) -> None:
        data = doc.encode("utf-8")
        self.documents += 1
        self.characters += len(doc)
        self.bytes += len(data)
        self.hash.update(len(data).to_bytes(8, "little") + data)
        self.buf.append(doc)
        if len(self.buf) >= _WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        table = pa.table({"text": pa.array(self.buf, type=pa.large_string())})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)
        self.buf = []

    def close(self) -> dict:
        if self.buf or self.writer is None:
            self.flush()
        self.writer.close()
        return {"documents": self.documents, "characters": self.characters, "bytes": self.bytes,
                "sha256": self.hash.hexdigest()}


def write_corpus(train_docs: Iterable[str], out_dir: Path, seed: int, validation_fraction: float,
                 validation_docs: Optional[Iterable[str]] = None, source: Optional[str] = None,
                 min_chars: Optional[int] = None, extra_train_docs: Iterable[str] = (),
                 validation_source: Optional[str] = None) -> dict:
    """Split (unless ``validation_docs`` is given) and write both splits; return flat stats per split.

    ``extra_train_docs`` go to the training split only, after the others (``fetch_corpus.train_extra``).
    ``source``, ``min_chars`` and ``validation_source`` only make the error messages name what the user set."""
    writers = {s: _SplitWriter(out_dir / f"{s}.parquet") for s in SPLITS}
    for doc in train_docs:
        to_val = validation_docs is None and is_validation(doc, seed, validation_fraction)
        writers["validation" if to_val else "train"].add(doc)
    split_docs = writers["train"].documents + (writers["validation"].documents if validation_docs is None else 0)
    for doc in validation_docs or ():
        writers["validation"].add(doc)
    main_docs = writers["train"].documents
    for doc in extra_train_docs:
        writers["train"].add(doc)
    extra = writers["train"].documents - main_docs
    stats = {s: w.close() for s, w in writers.items()}
    _check_splits(stats["train"]["documents"], stats["validation"]["documents"], split_docs, validation_fraction,
                  validation_docs is not None, source, min_chars, validation_source)
    flat = {f"{s}_{k}": v for s, d in stats.items() for k, v in d.items()}
    total = hashlib.sha256((stats["train"]["sha256"] + stats["validation"]["sha256"]).encode()).hexdigest()
    flat["train_extra_documents"] = extra
    return {"documents": flat["train_documents"] + flat["validation_documents"],
            "characters": flat["train_characters"] + flat["validation_characters"],
            "bytes": flat["train_bytes"] + flat["validation_bytes"], **flat, "content_sha256": total}


def _check_splits(train: int, validation: int, split_docs: int, fraction: float, given_validation: bool,
                  source: Optional[str], min_chars: Optional[int], validation_source: Optional[str]) -> None:
    """One line that names the real cause of an empty split: cleaning left no documents, the split put all of
    them on one side, or there were too few documents to split (``split_docs``: those the split saw)."""
    where = f"fetch_corpus.source = {source!r}: " if source is not None else ""
    chars = f"fetch_corpus.min_chars{f' = {min_chars}' if min_chars is not None else ''}"
    frac = f"fetch_corpus.validation_fraction = {fraction}"
    if train == 0 and (given_validation or split_docs == 0):
        raise CorpusError(f"{where}the corpus is empty after cleaning: no documents left of at least {chars} "
                          f"characters; lower fetch_corpus.min_chars or check the source")
    if train == 0 and split_docs == 1:
        raise CorpusError(f"{where}the training split is empty: 1 document after cleaning and {frac} put it in "
                          f"validation; a split needs at least 2 documents, or set fetch_corpus.validation_source")
    if train == 0:
        raise CorpusError(f"{where}the training split is empty: {frac} put all {split_docs} documents after "
                          f"cleaning in validation; lower fetch_corpus.validation_fraction or set "
                          f"fetch_corpus.validation_source")
    if validation == 0 and given_validation:
        vs = f" = {validation_source!r}" if validation_source is not None else ""
        raise CorpusError(f"fetch_corpus.validation_source{vs}: no documents left after cleaning (each needs at "
                          f"least {chars} characters; with fetch_corpus.dedupe, documents already in the source "
                          f"are dropped)")
    if validation == 0 and fraction <= 0:
        raise CorpusError(f"{where}the validation split is empty: {frac} puts no document in validation; raise it or "
                          f"set fetch_corpus.validation_source")
    if validation == 0 and split_docs == 1:
        raise CorpusError(f"{where}the validation split is empty: 1 document after cleaning, and it went to training; "
                          f"a split needs at least 2 documents, or set fetch_corpus.validation_source")
    if validation == 0:
        raise CorpusError(f"{where}the validation split is empty: {frac} put none of the {split_docs} documents in "
                          f"validation; raise fetch_corpus.validation_fraction or set fetch_corpus.validation_source")


def read_split(corpus_dir: str | os.PathLike, split: str) -> Iterator[str]:
    pf = pq.ParquetFile(Path(corpus_dir) / f"{split}.parquet")
    for batch in pf.iter_batches(columns=["text"], batch_size=_WRITE_BATCH):
        yield from batch.column(0).to_pylist()
