"""Hub revisions: ``build_model.revision`` and ``train_tokenizer.from_revision`` pin a Hub id to a branch, tag or
commit; the stages load that revision and record the commit they loaded (``resolved_commit``, in
metrics/details/model.json and metrics/details/tokenizer.json).

The Hugging Face cache is written here in huggingface_hub's own layout (``refs/<name>`` holding a commit,
``snapshots/<commit>/<file>`` linked to ``blobs/<sha256>``), from tiny models and a tokenizer saved with
``save_pretrained``, so nothing is downloaded. The stages run as scripts in a temporary directory with their own
params.yaml, offline (``HF_HUB_OFFLINE=1``), as `dvc repro` runs them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_repo import PROJECT, dump_params, tiny_params, venv_env

REPO_ID = "mlmpipe-tests/rev-bert"
MAIN = hashlib.sha1(b"main").hexdigest()  # refs/main
V2 = hashlib.sha1(b"v2").hexdigest()  # refs/v2 (a tag)
PINNED = hashlib.sha1(b"pinned").hexdigest()  # a snapshot no ref points to: reachable only by its commit
SEEDS = {MAIN: 0, V2: 1, PINNED: 2}
MAX_LENGTH = {MAIN: 128, V2: 64, PINNED: 96}  # what tells the tokenizers of the snapshots apart
PROBE = "bert.encoder.layer.0.attention.self.query.weight"


def _put_snapshot(repo_dir: Path, commit: str, files: list[Path], ref: str | None) -> None:
    """``files`` as huggingface_hub stores a download: content in blobs/, a link to it in snapshots/<commit>/."""
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in files:
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy2(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def hf_home(wp_dir, wp_tok, tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from mlmpipe import tokenizer as T

    home = tmp_path_factory.mktemp("hf_home_rev")
    repo_dir = home / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    for commit, ref in ((MAIN, "main"), (V2, "v2"), (PINNED, None)):
        saved = home.parent / f"saved_{commit[:8]}"
        torch.manual_seed(SEEDS[commit])
        BertForMaskedLM(BertConfig(vocab_size=len(wp_tok), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=64)).save_pretrained(saved, safe_serialization=True)
        tok = T.load(str(wp_dir))
        tok.model_max_length = MAX_LENGTH[commit]
        T.save(tok, saved)
        _put_snapshot(repo_dir, commit, sorted(saved.iterdir()), ref)
    return home


@pytest.fixture(scope="module")
def workdir(wp_dir, docs, tmp_path_factory) -> Path:
    """What build_model and train_tokenizer read: a corpus and a (local) tokenizer, as earlier stages write them."""
    from mlmpipe import corpus

    d = tmp_path_factory.mktemp("rev_work")
    (d / "data" / "corpus").mkdir(parents=True)
    corpus.write_corpus(docs[:60], d / "data" / "corpus", 0, 0.2)
    shutil.copytree(wp_dir, d / "data" / "tokenizer")
    return d


def _stage(hf_home: Path, workdir: Path, tmp_path: Path, name: str, **sections) -> tuple[int, str, Path]:
    """Run ``stages/<name>.py`` offline in a copy of ``workdir`` with tiny params changed by ``sections``."""
    run_dir = tmp_path / "run"
    shutil.copytree(workdir, run_dir, symlinks=True)
    params = tiny_params(family="bert", tokenize_group={"block_size": 32}, **sections)
    (run_dir / "params.yaml").write_text(dump_params(params), encoding="utf-8")
    env = venv_env({"HF_HOME": str(hf_home), "HF_ENDPOINT": "http://127.0.0.1:9", "MLMPIPE_LOG": "WARNING"},
                   src=PROJECT / "src")
    proc = subprocess.run([sys.executable, str(PROJECT / "stages" / f"{name}.py")], cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stderr, run_dir


def _record(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "metrics" / "details" / f"{name}.json").read_text(encoding="utf-8"))


def _probe(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path))[PROBE]


def _unpinned_warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "not reproducible until the revision is pinned" in ln]


@pytest.mark.parametrize("revision, commit", [(None, MAIN), ("v2", V2), (PINNED, PINNED)],
                         ids=["main", "tag", "commit"])
def test_build_model_loads_the_revision_and_records_its_commit(hf_home, workdir, tmp_path, revision, commit):
    rc, err, run_dir = _stage(hf_home, workdir, tmp_path, "build_model",
                              build_model={"init": "pretrained", "checkpoint": REPO_ID, "revision": revision})
    assert rc == 0, err[-3000:]
    record = _record(run_dir, "model")
    assert (record["checkpoint"], record["revision"], record["resolved_commit"]) == (REPO_ID, revision, commit)
    snapshot = hf_home / "hub" / ("models--" + REPO_ID.replace("/", "--")) / "snapshots"
    loaded = _probe(run_dir / "data" / "model_init" / "model.safetensors")
    assert loaded.equal(_probe(snapshot / commit / "model.safetensors"))  # that revision's weights ...
    for other in {MAIN, V2, PINNED} - {commit}:
        assert not loaded.equal(_probe(snapshot / other / "model.safetensors"))  # ... and no other's
    assert "resolved_commit" not in json.loads((run_dir / "metrics" / "model.json").read_text())  # details only
    warnings = _unpinned_warnings(err)
    if revision == PINNED:
        assert warnings == [], err[-3000:]
    else:  # unpinned: one warning, naming the key to set and the commit to pin
        assert len(warnings) == 1, err[-3000:]
        assert f"build_model.revision: {commit}" in warnings[0] and REPO_ID in warnings[0]


@pytest.mark.parametrize("revision, commit", [("v2", V2), (PINNED, PINNED)], ids=["tag", "commit"])
def test_train_tokenizer_loads_the_revision_and_records_its_commit(hf_home, workdir, tmp_path, revision, commit):
    rc, err, run_dir = _stage(hf_home, workdir, tmp_path, "train_tokenizer",
                              train_tokenizer={"from": REPO_ID, "from_revision": revision})
    assert rc == 0, err[-3000:]
    record = _record(run_dir, "tokenizer")
    assert (record["source"], record["revision"], record["resolved_commit"]) == (REPO_ID, revision, commit)
    config = json.loads((run_dir / "data" / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == MAX_LENGTH[commit]
    warnings = _unpinned_warnings(err)
    assert len(warnings) == (0 if revision == PINNED else 1), err[-3000:]
    if warnings:
        assert f"train_tokenizer.from_revision: {commit}" in warnings[0]


@pytest.mark.parametrize("stage", ["build_model", "train_tokenizer"])
def test_revision_missing_offline_is_one_line(hf_home, workdir, tmp_path, stage):
    sections = ({"build_model": {"init": "pretrained", "checkpoint": REPO_ID, "revision": "v9"}}
                if stage == "build_model" else {"train_tokenizer": {"from": REPO_ID, "from_revision": "v9"}})
    rc, err, run_dir = _stage(hf_home, workdir, tmp_path, stage, **sections)
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    key = "build_model.checkpoint" if stage == "build_model" else "train_tokenizer.from"
    assert lines[0].startswith(f"error: {key} = '{REPO_ID}' (revision 'v9'): this revision is not in the local "
                               f"Hugging Face cache, and HF_HUB_OFFLINE is set"), lines[0]
    assert f"hf download {REPO_ID} --revision v9" in lines[0]


def test_scratch_records_no_revision(hf_home, workdir, tmp_path):
    rc, err, run_dir = _stage(hf_home, workdir, tmp_path, "build_model")
    assert rc == 0, err[-3000:]
    record = _record(run_dir, "model")
    assert (record["init"], record["revision"], record["resolved_commit"]) == ("scratch", None, None)
    assert _unpinned_warnings(err) == []


def test_local_directory_records_no_commit_and_refuses_a_revision(wp_dir):
    from mlmpipe import hub

    assert hub.provenance(str(wp_dir), "train_tokenizer.from", None, "train_tokenizer.from_revision",
                          ("tokenizer.json",)) == {"revision": None, "resolved_commit": None}
    with pytest.raises(hub.HubError) as e:
        hub.resolve(str(wp_dir), "train_tokenizer.from", ("tokenizer.json",), "main", "train_tokenizer.from_revision")
    assert str(e.value) == (f"train_tokenizer.from_revision = 'main' with train_tokenizer.from = {str(wp_dir)!r}, a "
                            f"local directory: a revision pins a Hub id only; set train_tokenizer.from_revision: null")


def test_snapshot_commit_is_read_from_the_cache_path():
    from mlmpipe import hub

    assert hub.snapshot_commit(f"/c/hub/models--a--b/snapshots/{MAIN}/config.json") == MAIN
    assert hub.snapshot_commit(f"/c/hub/models--a--b/snapshots/{MAIN}/sub/dir/model.safetensors") == MAIN
    assert hub.snapshot_commit("/some/dir/config.json") is None and hub.snapshot_commit(None) is None


@pytest.mark.parametrize("section, raw, message", [
    ("build_model", {"revision": "main"},
     "build_model.revision = 'main' with build_model.checkpoint = null: a revision pins a Hub id; set "
     "build_model.checkpoint to the Hub id, or build_model.revision: null"),
    ("train_tokenizer", {"from_revision": MAIN},
     f"train_tokenizer.from_revision = '{MAIN}' with train_tokenizer.from = null: a revision pins a Hub id; set "
     f"train_tokenizer.from to the Hub id, or train_tokenizer.from_revision: null"),
    ("build_model", {"init": "pretrained", "checkpoint": REPO_ID, "revision": 3},
     "build_model.revision = 3: must be a string or null"),
    ("train_tokenizer", {"from": REPO_ID, "from_revision": " "},
     "train_tokenizer.from_revision = ' ': must be a branch, tag or commit of the Hub id (no spaces around it), "
     "or null"),
])
def test_revision_params_are_validated(section, raw, message):
    from mlmpipe import params as P

    with pytest.raises(P.ParamError) as e:
        P.parse(P.SECTIONS[section], section, raw)
    assert str(e.value) == message


def test_revision_params_parse():
    from mlmpipe import params as P

    p = P.parse(P.BuildModel, "build_model", {"init": "pretrained", "checkpoint": REPO_ID, "revision": MAIN})
    assert (p.checkpoint, p.revision) == (REPO_ID, MAIN)
    t = P.parse(P.TrainTokenizer, "train_tokenizer", {"from": REPO_ID, "from_revision": "v2"})
    assert (t.from_dir, t.from_revision) == (REPO_ID, "v2")
