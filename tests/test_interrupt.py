"""Interrupted runs resume: SIGKILL the pretrain stage three times at different steps, rerun `dvc repro`,
and end with exactly the weights and metrics of an uninterrupted run. SIGTERM stops cleanly with a
checkpoint of its own and a one-line hint.

The pretrain process is stopped (SIGSTOP) before it is signalled, so the test sees the state the signal
lands in (the run not finished, which checkpoints exist) and the run cannot end between that look and the
signal."""
import hashlib
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline_repo import VENV_BIN, make_pretrain_ready, stages_run, tiny_params

pytestmark = pytest.mark.slow

STEPS, EVERY = 60, 4
KILL_AT = (4, 16, 32)  # each kill leaves most of the run ahead, so a fast machine cannot finish first
DVC_FAILED = 255  # `dvc repro` when a stage command fails; the stage's own status is in its message
STEP_LINE = re.compile(r"mlmpipe\.training: step (\d+)/(\d+) ")


def params(**pretrain):
    # A model a little larger than the tiny default, so a step takes milliseconds, not a fraction of one.
    return tiny_params(model={"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128},
                       tokenize_group={"block_size": 64},
                       pretrain={"max_steps": STEPS, "checkpoint_every": EVERY, "keep_checkpoints": 2,
                                 "log_every": 4, "eval_every": 20, "mixed_precision": "no", "batch_size": 16,
                                 **pretrain})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint_steps(repo) -> set[int]:
    d = repo.path / "data" / "checkpoints"
    return {int(p.name.split("-")[1]) for p in d.glob("*/step-*")} if d.is_dir() else set()  # <fingerprint>/step-


def newest_step(repo) -> int:
    return max(checkpoint_steps(repo), default=0)


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


class Repro:
    """`dvc repro` in the background, its stdout and stderr read as they come."""

    def __init__(self, repo):
        self.repo = repo
        self.proc = subprocess.Popen(["dvc", "repro"], cwd=repo.path, env=repo.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                        for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, buf):
        for line in stream:
            buf.append(line)

    def logged_step(self) -> int:
        """The last training step the stage has logged (log_every), 0 before the first."""
        return max((int(m.group(1)) for line in list(self.err) for m in STEP_LINE.finditer(line)), default=0)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        self.proc.wait(timeout=timeout)
        for t in self.readers:
            t.join(timeout=10)
        return self.proc.returncode, "".join(self.out), "".join(self.err)


def signal_pretrain(repo, sig: int, at: int, need_checkpoint: bool):
    """Start `dvc repro`, wait until training has logged step ``at`` (and, with ``need_checkpoint``, written a
    checkpoint at or after it), stop the pretrain process, check that the run has not finished, note the
    checkpoints present, then send ``sig``. Returns (returncode, stdout, stderr, checkpoints before the signal,
    the last logged step)."""
    run = Repro(repo)
    deadline = time.time() + 300
    try:
        while run.logged_step() < at or (need_checkpoint and newest_step(repo) < at):
            assert run.proc.poll() is None, f"dvc repro ended before step {at}: {''.join(run.err)[-2000:]}"
            assert time.time() < deadline, f"step {at} not reached in time"
            time.sleep(0.01)
        proc = pretrain_process(run.proc)
        assert proc is not None, "the pretrain process ended before it could be signalled"
        proc.suspend()  # SIGSTOP: nothing moves while we look
        while proc.status() != psutil.STATUS_STOPPED:  # the stop is delivered asynchronously
            assert time.time() < deadline, f"the pretrain process did not stop: {proc.status()}"
            time.sleep(0.01)
        time.sleep(0.2)  # what the process wrote before it stopped reaches the reader
        logged, before = run.logged_step(), checkpoint_steps(repo)
        assert logged < STEPS and not (repo.path / "data" / "model").exists(), "the run finished before the signal"
        assert not (repo.path / "metrics" / "train.json").exists()
        proc.send_signal(sig)
        if sig != signal.SIGKILL:
            proc.resume()
        rc, out, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    return rc, out, err, before, logged


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The stages before pretrain, run once: each test copies this repo, so its runs start at pretrain."""
    return make_pretrain_ready(tmp_path_factory.mktemp("interrupt") / "upstream", params())


def test_sigkill_three_times_then_resume_matches_uninterrupted(tmp_path, upstream):
    ref = upstream.copy(tmp_path / "ref")
    rc, out, err = ref.repro()
    assert rc == 0, err[-2000:]
    assert stages_run(out) == ["pretrain", "evaluate", "fill_mask_report"], out  # the copied stages are current

    repo = upstream.copy(tmp_path / "killed")
    for at in KILL_AT:  # three kills at different steps; each run resumes from the last checkpoint
        rc, out, err, before, logged = signal_pretrain(repo, signal.SIGKILL, at, need_checkpoint=True)
        assert rc == DVC_FAILED, err[-2000:]
        # -9 when DVC's shell execs python itself; 137 (128 + 9) when the shell forks it and reports
        # the signal as its own status (it depends on $SHELL: bash -c execs, other shells may not)
        assert re.search(r"failed to run: python stages/pretrain\.py, exited with (-9|137)\b", err), err[-2000:]
        assert not (repo.path / "data" / "model").exists()  # no half-written model for DVC to cache
        assert checkpoint_steps(repo) == before and max(before) >= at  # SIGKILL leaves no checkpoint of its own
    rc, out, err = repo.repro()
    assert rc == 0, err[-2000:]
    assert "resuming from" in err
    train = repo.read_json("metrics/details/train.json")
    assert train["steps"] == STEPS and train["resumed_from_step"] >= KILL_AT[-1]
    assert sha(repo.path / "data/model/model.safetensors") == sha(ref.path / "data/model/model.safetensors")
    for name in ("eval.json", "details/eval.json", "fill_mask.json", "details/fill_mask.json", "curve_train.csv",
                 "curve_val.csv"):
        assert (repo.path / "metrics" / name).read_bytes() == (ref.path / "metrics" / name).read_bytes(), name
    rc, out, err = repo.dvc("status")
    assert rc == 0 and "Data and pipelines are up to date." in out, out + err


def test_sigterm_writes_checkpoint_and_says_how_to_resume(tmp_path, upstream):
    # No periodic checkpoint in this run (checkpoint_every > max_steps): any checkpoint is the signal's.
    repo = upstream.copy(tmp_path / "term", params(checkpoint_every=1000))
    rc, out, err, before, logged = signal_pretrain(repo, signal.SIGTERM, 4, need_checkpoint=False)
    assert before == set()
    assert rc == DVC_FAILED, err[-2000:]
    assert "failed to run: python stages/pretrain.py, exited with 2" in err, err[-2000:]  # the stage's clean exit
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines and "interrupted" in lines[-1] and "dvc repro" in lines[-1], err[-2000:]
    assert "Traceback" not in err
    written = checkpoint_steps(repo) - before
    assert len(written) == 1, checkpoint_steps(repo)
    step = written.pop()  # the step in progress when the signal came, finished, then saved
    assert logged <= step < STEPS
    assert f"signal 15 at step {step}/{STEPS}" in lines[-1] and f"step-{step:07d}" in err, err[-2000:]
    assert not (repo.path / "data" / "model").exists()
    rc, out, err = repo.repro()
    assert rc == 0 and re.search(rf"resuming from data/checkpoints/[0-9a-f]{{16}}/step-{step:07d}", err), err[-2000:]
    assert repo.read_json("metrics/details/train.json")["resumed_from_step"] == step


def _queued_pretrain(root: Path):
    """The pretrain process of a queued experiment of the repo at ``root`` (it runs in a temporary workspace
    under .dvc/tmp/exps), or None."""
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmd, cwd = proc.info["cmdline"] or [], proc.info["cwd"] or ""
        if "stages/pretrain.py" in cmd and "python" in Path(cmd[0]).name and cwd.startswith(str(root)):
            return proc
    return None


def _queue(repo, env) -> str:
    rc, out, err = repo.dvc("exp", "run", "--queue", "-S", "pretrain.lr=0.003", env=env)
    assert rc == 0, err
    (name,) = re.findall(r"^Queued experiment '([^']+)'", out, re.M)
    # not through a pipe: the queue's worker inherits the command's stdout and would hold it open until it exits
    start = subprocess.run([str(VENV_BIN / "dvc"), "queue", "start", "-j", "1"], cwd=repo.path, env=repo.env(env),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    assert start.returncode == 0
    return name


def _queue_state(repo, name: str, want: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rc, status, _ = repo.dvc("queue", "status")
        if re.search(rf"\b{re.escape(name)}\b.*\s{want}\s*$", status, re.M):
            return
        time.sleep(1)
    raise AssertionError(f"{name} not {want} in {timeout} s:\n{status}")


def test_a_killed_queued_experiment_resumes_when_queued_again(tmp_path, upstream):
    """$MLMPIPE_CHECKPOINTS puts the checkpoints outside the workspace, keyed by fingerprint: a queued experiment
    (a temporary workspace that goes with the run) SIGKILLed mid-pretrain resumes from its checkpoint when it is
    queued again, and the finished run removes its own checkpoints only. The stages before pretrain are
    committed (dvc.lock) with their outputs in the cache, as in a project whose data pipeline has run once."""
    repo = upstream.copy(tmp_path / "queued", params(max_steps=150, checkpoint_every=10, log_every=50,
                                                      eval_every=150))
    rc, out, err = repo.git("add", "-A")
    assert rc == 0, err
    rc, out, err = repo.git("commit", "-q", "-m", "data stages run; queued runs start at pretrain")
    assert rc == 0, err
    cache = tmp_path / "checkpoint-cache"
    other = cache / ("0" * 16) / "step-0000010"  # another run's, which this one must neither take nor remove
    other.mkdir(parents=True)
    env = {"MLMPIPE_CHECKPOINTS": str(cache)}
    first = _queue(repo, env)
    deadline, proc = time.time() + 300, None
    while proc is None:
        assert time.time() < deadline, "no checkpoint of the queued run in time"
        steps = {int(p.name.split("-")[1]) for p in cache.glob("*/step-*") if p.parent.name != "0" * 16}
        if steps and max(steps) >= 20:
            proc = _queued_pretrain(repo.path)
        time.sleep(0.05)
    proc.suspend()
    killed = max(int(p.name.split("-")[1]) for p in cache.glob("*/step-*") if p.parent.name != "0" * 16)
    proc.kill()
    _queue_state(repo, first, "Failed")
    (run,) = [d for d in cache.iterdir() if d.name != "0" * 16]
    assert re.fullmatch(r"[0-9a-f]{16}", run.name) and any(run.glob("step-*"))

    second = _queue(repo, env)
    _queue_state(repo, second, "Success")
    rc, log, err = repo.dvc("queue", "logs", second)
    assert rc == 0 and re.search(rf"resuming from {re.escape(str(run))}/step-{killed:07d}", log + err), log[-3000:]
    assert not run.exists() and other.is_dir()  # its own checkpoints spent, the other run's untouched
