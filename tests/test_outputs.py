"""outputs.py: atomic directories and files take the permissions the user's umask gives (as
``save_pretrained`` folders and plain files do), not tempfile's private 0700 / 0600."""
from __future__ import annotations

import contextlib
import os
import stat

import pytest

from mlmpipe.outputs import atomic_dir, atomic_file, write_json, write_text


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> str:
    return oct(stat.S_IMODE(os.stat(path).st_mode))


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002], ids=oct)
def test_atomic_dir_and_files_follow_the_umask(tmp_path, mask):
    with umask(mask):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "inner").mkdir()
            write_json(tmp / "params.json", {"a": 1})
        write_text(tmp_path / "metrics.csv", "step\n1\n")
        with atomic_file(tmp_path / "blob.bin", "wb") as fh:
            fh.write(b"\0")
    assert mode(tmp_path / "out") == oct(0o777 & ~mask)
    assert mode(tmp_path / "out" / "inner") == oct(0o777 & ~mask)
    for name in ("out/params.json", "metrics.csv", "blob.bin"):
        assert mode(tmp_path / name) == oct(0o666 & ~mask), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "metrics.csv", "out"]  # no temporaries left


def test_model_folder_has_the_modes_of_a_save_pretrained_folder(tmp_path, bpe_tok):
    """data/model is written through atomic_dir: the same modes as a folder save_pretrained makes itself."""
    with umask(0o022):
        bpe_tok.save_pretrained(tmp_path / "plain")
        with atomic_dir(tmp_path / "model") as tmp:
            bpe_tok.save_pretrained(tmp)
            write_json(tmp / "training_params.json", {"seed": 0})
    assert mode(tmp_path / "model") == mode(tmp_path / "plain") == "0o755"
    for f in (tmp_path / "model").iterdir():
        assert mode(f) == mode(tmp_path / "plain" / "tokenizer.json") == "0o644", f.name


def test_a_failed_write_leaves_the_old_output_and_no_temporaries(tmp_path):
    write_text(tmp_path / "a.txt", "old\n")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "a.txt") as fh:
            fh.write("new\n")
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("new\n")
            raise RuntimeError("killed")
    assert (tmp_path / "a.txt").read_text() == "old\n" and (tmp_path / "d" / "x").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "d"]
