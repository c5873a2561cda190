"""Watching a run as it goes: DVCLive's summary (metrics/live/metrics.json, a DVC metric) and the curve files
are current at every row of the curves, and once the run ends they hold no timing, so identical runs (resumed or
not) leave identical bytes. The end-to-end check runs a real `dvc exp run` and reads them, and `dvc exp show`,
while pretrain is still running."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from mlmpipe import training as TR
from mlmpipe.live import LiveMetrics
from mlmpipe.masking import Masker

from pipeline_repo import VENV_BIN, make_repo, tiny_params
from test_training import SignalAt, fresh_model

BLOCK = 32


@pytest.fixture(scope="module")
def data(bpe_tok, docs, val_docs):
    from mlmpipe import grouping as G

    return (G.group_batch({"text": docs}, bpe_tok, BLOCK)["input_ids"],
            G.group_batch({"text": val_docs}, bpe_tok, BLOCK)["input_ids"])


class Watcher:
    """The real masker, plus a look at the live files before every training step (what `dvc exp show` or the
    plots would read at that moment)."""

    def __init__(self, tok, metrics_dir):
        self.masker, self.dir, self.seen = Masker.from_tokenizer(tok), metrics_dir, []

    def __call__(self, ids, prob, g, ensure_one=True):
        if ids.shape[0] > 1 and (self.dir / "live" / "metrics.json").exists():
            summary = json.loads((self.dir / "live" / "metrics.json").read_text())
            rows = (self.dir / "curve_train.csv").read_text().splitlines()[1:]
            self.seen.append((summary, len(rows)))
        return self.masker(ids, prob, g, ensure_one)


def train(tok, data, p, tmp, masker=None):
    model, hist, summary = TR.train(fresh_model(tok), data[0], data[1], masker or Masker.from_tokenizer(tok), p, 42,
                                    tok.pad_token_id, str(tmp / "ck"), "fp", show_progress=False,
                                    live=lambda: LiveMetrics(str(tmp / "metrics")))
    return hist, summary


def test_live_files_are_current_while_training_and_timeless_after(bpe_tok, data, tmp_path):
    from conftest import tiny_pretrain_params

    p = tiny_pretrain_params(max_steps=12, log_every=2, eval_every=4)
    watcher = Watcher(bpe_tok, tmp_path / "metrics")
    hist, _ = train(bpe_tok, data, p, tmp_path, masker=watcher)
    # before step 3, 5, ... the rows of steps 2, 4, ... are there, with tokens/s while running
    steps = [s["step"] for s, _ in watcher.seen]
    assert steps == [2, 2, 4, 4, 6, 6, 8, 8, 10, 10], steps
    assert all(n == s["step"] // 2 for s, n in watcher.seen)
    assert all("tok_s" in s and "loss" in s and "lr" in s for s, _ in watcher.seen)
    assert "val_loss" in watcher.seen[2][0] and "val_loss" not in watcher.seen[0][0]  # from step 4 on
    final = json.loads((tmp_path / "metrics" / "live" / "metrics.json").read_text())
    assert final == {"loss": hist.train[-1]["loss"], "lr": hist.train[-1]["lr"],
                     "val_loss": hist.val[-1]["val_loss"], "val_top1": hist.val[-1]["val_top1"], "step": 12}


def test_a_resumed_run_leaves_the_same_bytes(bpe_tok, data, tmp_path):
    from conftest import tiny_pretrain_params

    p = tiny_pretrain_params(max_steps=12, log_every=2, eval_every=4, checkpoint_every=1000)
    train(bpe_tok, data, p, tmp_path / "a")
    with pytest.raises(TR.Interrupted):
        train(bpe_tok, data, p, tmp_path / "b", masker=SignalAt(bpe_tok, at=7))
    train(bpe_tok, data, p, tmp_path / "b")
    for rel in ("live/metrics.json", "curve_train.csv", "curve_val.csv"):
        assert (tmp_path / "a/metrics" / rel).read_bytes() == (tmp_path / "b/metrics" / rel).read_bytes(), rel


def test_live_metrics_work_in_a_git_repository_with_no_commit_yet(tmp_path, monkeypatch):
    """A new project's first `dvc repro` runs before its first commit."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    live = LiveMetrics("metrics")
    live.train_row({"step": 1, "loss": 2.5, "lr": 0.1}, 100.0, TR.History(train=[{"step": 1, "loss": 2.5, "lr": 0.1}]))
    assert json.loads((tmp_path / "metrics/live/metrics.json").read_text()) == {"loss": 2.5, "lr": 0.1,
                                                                               "tok_s": 100.0, "step": 1}


@pytest.mark.slow
def test_dvc_exp_run_shows_the_run_as_it_goes(tmp_path):
    """A real `dvc exp run` of the tiny pipeline: before pretrain ends, metrics/live/metrics.json and the curve
    files hold rows, and `dvc exp show` shows the running workspace's step and loss."""
    repo = make_repo(tmp_path / "repo", tiny_params(pretrain={"max_steps": 400, "log_every": 10, "eval_every": 100,
                                                               "checkpoint_every": 1000}))
    proc = subprocess.Popen([str(VENV_BIN / "dvc"), "exp", "run"], cwd=repo.path, env=repo.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    summary, shown, rows = None, None, 0
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            live = repo.path / "metrics" / "live" / "metrics.json"
            if live.exists() and not (repo.path / "metrics" / "details" / "train.json").exists():
                try:
                    summary = json.loads(live.read_text())
                except ValueError:  # caught mid-write
                    continue
                if summary.get("step", 0) >= 20:
                    rows = len((repo.path / "metrics" / "curve_train.csv").read_text().splitlines()) - 1
                    rc, out, err = repo.dvc("exp", "show", "--json")
                    assert rc == 0, err
                    shown = json.loads(out)
                    break
            time.sleep(0.2)
        out = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert summary is not None and "tok_s" in summary and summary["step"] < 400, summary  # seen mid-run
    assert rows >= 2
    workspace = shown[0]["data"]
    assert workspace["rev"] == "workspace"
    live_shown = workspace["metrics"]["metrics/live/metrics.json"]["data"]
    assert 20 <= live_shown["step"] < 400 and live_shown["loss"] > 0, live_shown
    final = repo.read_json("metrics/live/metrics.json")
    assert final["step"] == 400 and "tok_s" not in final
