"""Atomic outputs: everything is written under a temporary name and moved into place at the end,
so a stage that fails or is killed never leaves a half-written output that DVC would cache."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .params import MlmpipeError

_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file too large",
              errno.EDQUOT: "disk quota exceeded"}


class OutputError(MlmpipeError):
    pass


def disk_full(e: BaseException) -> str | None:
    """Why a write failed, if the disk (or a size limit) is full: OSError, or a Rust writer's
    "(os error 28)" (safetensors and tokenizers report I/O errors as text)."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None:
        m = re.search(r"\(os error (\d+)\)", str(e))
        code = int(m.group(1)) if m else None
    return _DISK_FULL.get(code)


def _full_error(dest: Path, reason: str) -> OutputError:
    return OutputError(f"{dest}: the disk is full while writing it ({reason}); nothing was written and the "
                       f"previous {dest.name} is unchanged: free space, or point paths.* at a larger disk")


def _fresh(dest: Path, create: Callable[[Path], Any]) -> tuple[Path, Any]:
    """A new ``.<name>.tmp-<random>`` beside ``dest``, made by ``create(path)`` (``os.mkdir``, or an exclusive
    open), and what ``create`` returned. Unlike tempfile's mkdtemp (mode 0700) and mkstemp (0600), this lets the
    user's umask set the mode, so outputs get the permissions any ``save_pretrained`` folder or other file
    would (0755 and 0644 under umask 022)."""
    for _ in range(100):
        path = dest.parent / f".{dest.name}.tmp-{secrets.token_hex(4)}"
        try:
            return path, create(path)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(dest.parent / f".{dest.name}.tmp-*"))


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``dest``; on success it replaces ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = _fresh(dest, os.mkdir)
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (reason := disk_full(e)) is not None:
            raise _full_error(dest, reason) from None
        raise


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``dest`` for writing; on success it is fsynced and renamed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _fresh(dest, lambda path: os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if (reason := disk_full(e)) is not None:
            raise _full_error(dest, reason) from None
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_report(metrics_dir: str | os.PathLike, name: str, record: dict, figures: Mapping[str, str],
                 digits: int = 4) -> None:
    """A stage's report in two files: ``<metrics_dir>/details/<name>.json``, its whole record (sources, hashes,
    names, per-item detail: a plain output), and ``<metrics_dir>/<name>.json``, the few figures of it that runs
    are compared by (a DVC metric: a column of `dvc exp show`, a row of `dvc metrics diff`), ``figures`` mapping
    each metric name to its key in the record. Short names and figures rounded to ``digits`` decimals keep
    `dvc exp show` narrow; the record keeps every digit."""
    missing = [k for k in figures.values() if k not in record]
    if missing:
        raise KeyError(f"{name}: no {', '.join(missing)} in the record")
    write_json(Path(metrics_dir) / "details" / f"{name}.json", record)
    write_json(Path(metrics_dir) / f"{name}.json",
               {shown: _rounded(record[key], digits) for shown, key in figures.items()})


def _rounded(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) else value
