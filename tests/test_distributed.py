"""Scale-out smoke test: the pretrain stage under a real multi-process launcher (torchrun, gloo, CPU)
trains the same loss curve as one process with the same global batch."""
import csv
import shutil

import pytest

from pipeline_repo import make_repo, readme_command, run_readme, stages_run, tiny_params

pytestmark = pytest.mark.slow


def ok(result, what):
    rc, out, err = result
    assert rc == 0, f"{what} failed ({rc}):\n{out[-2000:]}\n{err[-2000:]}"
    return out


def curve(repo):
    with open(repo.path / "metrics" / "curve_train.csv", encoding="utf-8") as fh:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]


def test_two_processes_match_one(tmp_path):
    if shutil.which("torchrun", path=str(make_repo.__globals__["VENV_BIN"])) is None:
        pytest.fail("torchrun is missing from the venv")
    params = tiny_params(pretrain={"max_steps": 8, "batch_size": 8, "log_every": 1, "eval_every": 4,
                                   "checkpoint_every": 100, "mixed_precision": "no"})
    repo = make_repo(tmp_path / "repo", params)
    rc, out, err = repo.repro()
    assert rc == 0, err[-2000:]
    one = curve(repo)
    ok(repo.git("add", "-A"), "git add")
    ok(repo.git("commit", "-q", "-m", "one process"), "git commit")
    cmd = readme_command("torchrun --standalone --nproc_per_node 2")  # the README's launcher line, as written
    rc, out, err = run_readme(repo, cmd)
    assert rc == 0, err[-2000:]
    assert repo.params()["pretrain"]["launcher"] == "torchrun --standalone --nproc_per_node 2"
    assert "pretrain" in stages_run(out) and "build_model" not in stages_run(out)
    two = curve(repo)
    assert repo.read_json("metrics/details/train.json")["processes"] == 2
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 9))
    for (_, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=2e-3, abs=2e-3)  # same masks and batches; only reduction order differs
