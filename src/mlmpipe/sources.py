"""Where documents come from: the builtin corpora, local files (.txt, .jsonl, .json, .csv, .parquet), an
http(s) URL (timeout, size limit, sha256) and a Hugging Face dataset. ``iter_source`` turns a source string
into a stream of raw documents; ``corpus`` cleans and splits them.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .params import FetchCorpus, MlmpipeError

log = logging.getLogger(__name__)

BUILTIN = "builtin:python-docs"
BUILTIN_DOCSTRINGS = "builtin:python-docstrings"
_READ_BATCH = 10_000  # Parquet rows per read
_NOT_DOCS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3", "__pycache__"}


class CorpusError(MlmpipeError):
    pass


def builtin_python_docs() -> Iterator[str]:
    """The prose of Python's documentation topics (shipped with CPython), one document per paragraph."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[name]):
            lines = [ln for ln in para.splitlines() if not re.fullmatch(r"\s*[*=\-~^]{3,}\s*", ln)]
            yield " ".join(" ".join(lines).split())


def builtin_python_docstrings() -> Iterator[str]:
    """The docstrings of Python's standard library (its ``.py`` sources, parsed, never imported), one document per
    paragraph; test suites and doctest examples (paragraphs starting with ``>>>``) left out."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if _NOT_DOCS.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):  # e.g. a template file that is not valid Python
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for para in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                    if not para.lstrip().startswith(">>>"):
                        yield " ".join(para.split())


def _decode(raw: bytes, path: str, offset: int, errors: str) -> str:
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{path}: looks binary (NUL byte at byte offset {offset + nul}); "
                          f"expected UTF-8 text")
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not valid UTF-8 at byte offset {offset + e.start}; "
                          f"set fetch_corpus.errors: replace to substitute invalid bytes") from None


def _text_lines(path: str, errors: str) -> Iterator[str]:
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            yield _decode(raw, path, offset, errors)
            offset += len(raw)


def read_txt(path: str, mode: str, errors: str) -> Iterator[str]:
    if mode == "line":
        yield from _text_lines(path, errors)
        return
    para: list[str] = []
    for line in _text_lines(path, errors):
        if line.strip():
            para.append(line.strip())
        elif para:
            yield " ".join(para)
            para = []
    if para:
        yield " ".join(para)


def _column(record: object, column: str, path: str, where: str) -> str:
    if not isinstance(record, dict) or column not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise CorpusError(f"{path}{where}: no column {column!r} (fetch_corpus.text_column); found {keys}")
    value = record[column]
    return "" if value is None else str(value)


def read_jsonl(path: str, column: str, errors: str) -> Iterator[str]:
    for i, line in enumerate(_text_lines(path, errors), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}: line {i} is not valid JSON: {e.msg}") from None
            yield _column(record, column, path, f" line {i}")


def read_json(path: str, column: str, errors: str) -> Iterator[str]:
    with open(path, "rb") as fh:
        text = _decode(fh.read(), path, 0, errors)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    if isinstance(data, dict):  # {"data": [...]} or column-oriented {"text": [...]}
        data = data.get("data", data)
        if isinstance(data, dict) and isinstance(data.get(column), list):
            data = [{column: v} for v in data[column]]
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a JSON list of records with a {column!r} field")
    for i, record in enumerate(data):
        yield _column(record, column, path, f" record {i}")


def read_csv(path: str, column: str, errors: str) -> Iterator[str]:
    reader = csv.DictReader(line for line in _text_lines(path, errors))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise CorpusError(f"{path}: no column {column!r} (fetch_corpus.text_column); found {reader.fieldnames}")
    for row in reader:
        yield row[column] or ""


def read_parquet(path: str, column: str) -> Iterator[str]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorpusError(f"{path}: not a readable Parquet file: {e}") from None
    if column not in pf.schema_arrow.names:
        raise CorpusError(f"{path}: no column {column!r} (fetch_corpus.text_column); found {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[column], batch_size=_READ_BATCH):
        for value in batch.column(0).to_pylist():
            yield "" if value is None else str(value)


def _format_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    ext = Path(urllib.parse.urlparse(path).path).suffix.lower().lstrip(".")
    return {"txt": "txt", "text": "txt", "md": "txt", "jsonl": "jsonl", "ndjson": "jsonl", "json": "json",
            "csv": "csv", "parquet": "parquet", "pq": "parquet"}.get(ext, "txt")


def read_file(path: str, fmt: str, txt_mode: str, column: str, errors: str) -> Iterator[str]:
    fmt = _format_of(path, fmt)
    if fmt == "txt":
        return read_txt(path, txt_mode, errors)
    if fmt == "jsonl":
        return read_jsonl(path, column, errors)
    if fmt == "json":
        return read_json(path, column, errors)
    if fmt == "csv":
        return read_csv(path, column, errors)
    return read_parquet(path, column)


def download(url: str, dest: Path, timeout_s: float, max_bytes: int, sha256: Optional[str],
             key: str = "fetch_corpus.source") -> Path:
    """Fetch ``url`` to ``dest`` with a timeout and a size limit; verify ``sha256`` when given."""
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(dest, "wb") as out:
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise CorpusError(f"{key} = {url!r}: larger than fetch_corpus.max_download_mb "
                                      f"= {max_bytes / 2**20:g} MB")
                digest.update(chunk)
                out.write(chunk)
            expected = resp.headers.get("Content-Length", "")
            if expected.isdigit() and size != int(expected):  # read() returns b"" when the connection drops
                raise CorpusError(f"{key} = {url!r}: download truncated: got {size} of "
                                  f"{expected} bytes; the download was deleted")
    except CorpusError:
        dest.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        dest.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CorpusError(f"{key} = {url!r}: download failed: {reason}") from None
    if sha256 and digest.hexdigest() != sha256.lower():
        dest.unlink(missing_ok=True)
        raise CorpusError(f"fetch_corpus.sha256: checksum mismatch for {url}: expected {sha256.lower()}, "
                          f"got {digest.hexdigest()}; the download was deleted")
    log.info("downloaded %s (%d bytes, sha256 %s)", url, size, digest.hexdigest())
    return dest


def read_hub(name: str, config: Optional[str], split: str, revision: Optional[str], column: str,
             key: str = "fetch_corpus.source") -> Iterator[str]:
    """A Hugging Face dataset (Hub name or local dataset directory), streamed with ``datasets.load_dataset``.

    A Hub name fails at once, in one line, when the Hub cannot be reached (``hub.require_hub``); in offline mode
    ``datasets`` looks in its cache, and its error gets the same advice."""
    import datasets

    from . import hub

    rev = f" --revision {revision}" if revision else ""
    fix = (f"download it once on a machine with network (hf download {name} --repo-type dataset{rev} --local-dir "
           f"DIR) and set {key}: hf:DIR")
    remote = hub.is_hub_id(name)
    offline = remote and bool(datasets.config.HF_HUB_OFFLINE)
    if remote and not offline:
        hub.require_hub(name, key, shown=f"hf:{name}", revision=revision, fix=fix, state="not a local directory")
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=revision, streaming=True)
        first = True
        for record in ds:
            if first and column not in record:
                raise CorpusError(f"fetch_corpus.text_column = {column!r}: dataset {name!r} has columns "
                                  f"{sorted(record)}")
            first = False
            yield "" if record[column] is None else str(record[column])
    except CorpusError:
        raise
    except Exception as e:  # datasets raises many kinds (FileNotFoundError, ConnectionError, HfHubHTTPError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = f"; offline mode is on (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE): {fix}" if offline else ""
        raise CorpusError(f"{key} = 'hf:{name}': cannot load the dataset "
                          f"(config={config}, split={split}, revision={revision}): {msg}{hint}") from None


def iter_source(source: str, p: FetchCorpus, scratch_dir: Path, key: str = "fetch_corpus.source") -> Iterator[str]:
    """Raw documents from one source string (see ``FetchCorpus.source``); ``key`` names the param in errors."""
    if source == BUILTIN:
        return builtin_python_docs()
    if source == BUILTIN_DOCSTRINGS:
        return builtin_python_docstrings()
    if source.startswith("builtin:"):
        raise CorpusError(f"{key} = {source!r}: unknown builtin corpus; allowed: {BUILTIN}, "
                          f"{BUILTIN_DOCSTRINGS}")
    if source.startswith("hf:"):
        return read_hub(source[3:], p.hf_config, p.hf_split, p.hf_revision, p.text_column, key)
    if re.match(r"^https?://", source):
        name = Path(urllib.parse.urlparse(source).path).name or "download"
        path = download(source, scratch_dir / name, p.timeout_s, int(p.max_download_mb * 2**20),
                        p.sha256 if key == "fetch_corpus.source" else None, key)  # sha256 is the source's
        return read_file(str(path), _format_of(source, p.format), p.txt_mode, p.text_column, p.errors)
    paths = sorted(glob.glob(source, recursive=True)) if glob.has_magic(source) else [source]
    paths = [x for x in paths if os.path.isfile(x)]
    if not paths:
        raise CorpusError(f"{key} = {source!r}: no such file" +
                          (" (the glob matched nothing)" if glob.has_magic(source) else ""))
    return (doc for path in paths for doc in read_file(path, p.format, p.txt_mode, p.text_column, p.errors))
