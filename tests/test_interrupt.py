"""Interrupted runs resume: SIGKILL the pretrain stage three times at different steps, rerun `dvc repro`,
and end with exactly the weights and metrics of an uninterrupted run. SIGTERM stops cleanly with a
checkpoint and a one-line hint."""
import hashlib
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pipeline_repo import make_repo, tiny_params

pytestmark = pytest.mark.slow

STEPS, EVERY = 60, 4
KILL_AT = (4, 16, 32)  # each kill leaves most of the run ahead, so a fast machine cannot finish first


def params():
    # A model a little larger than the tiny default, so a step takes milliseconds, not a fraction of one.
    return tiny_params(model={"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128},
                       tokenize_group={"block_size": 64},
                       pretrain={"max_steps": STEPS, "checkpoint_every": EVERY, "keep_checkpoints": 2,
                                 "log_every": 4, "eval_every": 20, "mixed_precision": "no", "batch_size": 16})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def newest_step(repo) -> int:
    d = repo.path / "data" / "checkpoints"
    steps = [int(p.name.split("-")[1]) for p in d.glob("step-*")] if d.is_dir() else []
    return max(steps, default=0)


def pretrain_process(dvc: subprocess.Popen):
    """The Python process running the stage: not the shell that dvc may start it through (a shell that
    does not exec its command would take the signal and leave Python training on)."""
    for child in psutil.Process(dvc.pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "stages/pretrain.py" in cmd and "python" in Path(cmd[0]).name:
            return child
    return None


def run_until_checkpoint(repo, at_least: int, sig: int):
    """Start `dvc repro`, wait for a checkpoint >= at_least, then send ``sig`` to the pretrain process."""
    dvc = subprocess.Popen(["dvc", "repro"], cwd=repo.path,
                           env=repo.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    try:
        while newest_step(repo) < at_least:
            assert dvc.poll() is None, f"dvc repro ended before step {at_least}: {dvc.communicate()[1][-2000:]}"
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.01)
        proc = pretrain_process(dvc)
        while proc is None and time.time() < deadline:  # the checkpoint came from this run's process
            time.sleep(0.01)
            proc = pretrain_process(dvc)
        assert proc is not None
        proc.send_signal(sig)
        out, err = dvc.communicate(timeout=120)
    finally:
        if dvc.poll() is None:
            dvc.kill()
    return dvc.returncode, out, err


def test_sigkill_three_times_then_resume_matches_uninterrupted(tmp_path):
    ref = make_repo(tmp_path / "ref", params())
    rc, _, err = ref.repro()
    assert rc == 0, err[-2000:]

    repo = make_repo(tmp_path / "killed", params())
    for at in KILL_AT:  # three kills at different steps; each run resumes from the last checkpoint
        rc, out, err = run_until_checkpoint(repo, at, signal.SIGKILL)
        assert rc != 0
        assert not (repo.path / "data" / "model").exists()  # no half-written model for DVC to cache
        assert newest_step(repo) >= at
    rc, out, err = repo.repro()
    assert rc == 0, err[-2000:]
    assert "resuming from" in err
    train = repo.read_json("metrics/train.json")
    assert train["steps"] == STEPS and train["resumed_from_step"] >= KILL_AT[-1]
    assert sha(repo.path / "data/model/model.safetensors") == sha(ref.path / "data/model/model.safetensors")
    for name in ("eval.json", "fill_mask.json", "curve_train.csv", "curve_val.csv"):
        assert (repo.path / "metrics" / name).read_bytes() == (ref.path / "metrics" / name).read_bytes(), name
    assert repo.dvc("status")[1].strip().endswith("up to date.") or "changed" not in repo.dvc("status")[1]


def test_sigterm_writes_checkpoint_and_says_how_to_resume(tmp_path):
    repo = make_repo(tmp_path / "term", params())
    rc, out, err = run_until_checkpoint(repo, 3, signal.SIGTERM)
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines and "interrupted" in lines[-1] and "dvc repro" in lines[-1], err[-2000:]
    assert "Traceback" not in err
    assert newest_step(repo) >= 3
    rc, out, err = repo.repro()
    assert rc == 0 and "resuming from" in err, err[-2000:]
