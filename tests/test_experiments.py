"""The README's experiment workflow on a tiny repo: `dvc exp run -S`, `dvc exp show`,
`dvc params diff` / `dvc metrics diff` against HEAD, and a queued grid run by `dvc queue start`.

One repo for the module (the pipeline run once and committed); the tests run in file order.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time

import pytest

from pipeline_repo import PROJECT, STAGES, PipelineRepo, make_repo, readme_command, run_readme, stages_run

pytestmark = pytest.mark.slow

LR = 0.003  # the README's `dvc exp run -S pretrain.lr=0.003`
GRID_SEEDS = (1, 2)
QUEUE_TIMEOUT_S = 600
# (metrics file, key) that `dvc exp show` must have a column for
METRIC_COLUMNS = (("metrics/eval.json", "ppl"), ("metrics/eval.json", "top1"), ("metrics/eval.json", "top5"),
                  ("metrics/train.json", "tok_s"), ("metrics/fill_mask.json", "cloze@1"),
                  ("metrics/fill_mask.json", "cloze@k"), ("metrics/model.json", "params_total"))
# what a new learning rate can change among the metrics: the headline figures, nothing descriptive
HEADLINE = {"tok_s", "ppl", "top1", "top5", "cloze@1", "cloze@k",
            "step", "loss", "lr", "val_loss", "val_top1"}  # the last ones: metrics/live/metrics.json (DVCLive)


def ok(result: tuple[int, str, str], what: str) -> str:
    rc, out, err = result
    assert rc == 0, f"{what} failed ({rc}):\n{out[-3000:]}\n{err[-3000:]}"
    return out


def exp_rows(show: list) -> dict[str, dict]:
    """{name: data} for the baseline commit and every experiment in `dvc exp show --json`."""
    rows: dict[str, dict] = {}
    for commit in show:
        if commit.get("rev") != "workspace" and commit.get("data"):
            rows[commit.get("name") or commit["rev"]] = commit["data"]
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("data"):
                    rows[rev.get("name") or exp.get("name")] = rev["data"]
    return rows


class Exp:
    def __init__(self, repo: PipelineRepo, name: str, out: str):
        self.repo, self.name, self.out = repo, name, out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> PipelineRepo:
    repo = make_repo(tmp_path_factory.mktemp("experiments") / "repo")
    template = PROJECT / "plots" / "offline_template.html"  # .dvc/config's plots.html_template
    assert template.is_file(), "plots/offline_template.html is missing: run `make plots-setup`"
    (repo.path / "plots").mkdir()
    shutil.copy2(template, repo.path / "plots" / template.name)
    assert stages_run(ok(repo.repro(), "dvc repro")) == list(STAGES)
    ok(repo.git("add", "-A"), "git add")
    ok(repo.git("commit", "-q", "-m", "pipeline run"), "git commit")
    return repo


@pytest.fixture(scope="module")
def lr_exp(repo: PipelineRepo) -> Exp:
    assert ok(repo.git("status", "--porcelain"), "git status") == ""  # a clean checkout
    cmd = readme_command(f"dvc exp run -S pretrain.lr={LR} ")
    out = ok(run_readme(repo, cmd), cmd)
    names = re.findall(r"^Ran experiment\(s\): (\S+)", out, re.M)
    assert len(names) == 1, out
    return Exp(repo, names[0], out)


def test_exp_run_from_clean_checkout(lr_exp: Exp):
    assert stages_run(lr_exp.out) == ["pretrain", "evaluate", "fill_mask_report"], lr_exp.out
    assert lr_exp.repo.params()["pretrain"]["lr"] == LR  # applied to the workspace


def test_exp_show_json_columns(lr_exp: Exp):
    rows = exp_rows(json.loads(ok(lr_exp.repo.dvc("exp", "show", "--json"), "dvc exp show --json")))
    assert {"main", lr_exp.name} <= set(rows), sorted(rows)
    for name, lr in (("main", 0.002), (lr_exp.name, LR)):
        data = rows[name]
        assert data["params"]["params.yaml"]["data"]["pretrain"]["lr"] == lr
        for path, key in METRIC_COLUMNS:
            assert isinstance(data["metrics"][path]["data"][key], (int, float)), (name, path, key)
    base, exp = (rows[n]["metrics"]["metrics/eval.json"]["data"] for n in ("main", lr_exp.name))
    assert base["ppl"] != exp["ppl"]


def test_exp_show_csv_columns(lr_exp: Exp):
    text = ok(lr_exp.repo.dvc("exp", "show", "--csv"), "dvc exp show --csv")
    table = list(csv.DictReader(io.StringIO(text)))
    header = set(table[0])
    # unique names are shown bare; a key found in two metrics files would be shown as "path:key"
    assert {key for _, key in METRIC_COLUMNS} | {"pretrain.lr"} <= header, sorted(header)
    by_name = {row["Experiment"] or row["rev"]: row for row in table}
    assert float(by_name[lr_exp.name]["pretrain.lr"]) == LR
    assert float(by_name["main"]["pretrain.lr"]) == 0.002


def test_params_diff(lr_exp: Exp):
    diff = json.loads(ok(lr_exp.repo.dvc("params", "diff", "HEAD", lr_exp.name, "--json"), "dvc params diff"))
    assert list(diff) == ["params.yaml"] and list(diff["params.yaml"]) == ["pretrain.lr"], diff
    lr = diff["params.yaml"]["pretrain.lr"]
    assert (lr["old"], lr["new"]) == (0.002, LR) and lr["diff"] == pytest.approx(LR - 0.002)
    text = ok(lr_exp.repo.dvc("params", "diff", "HEAD", lr_exp.name), "dvc params diff")
    assert re.search(rf"pretrain\.lr\s+0\.002\s+{LR}", text), text


def test_metrics_diff(lr_exp: Exp):
    repo = lr_exp.repo
    changed = json.loads(ok(repo.dvc("metrics", "diff", "HEAD", lr_exp.name, "--json"), "dvc metrics diff"))
    # a new learning rate changes training and evaluation, never the data or the initial model
    assert {"metrics/eval.json", "metrics/train.json"} <= set(changed), changed
    assert not {"metrics/corpus.json", "metrics/tokenizer.json", "metrics/tokenized.json",
                "metrics/model.json"} & set(changed), changed
    head_eval = json.loads(ok(repo.git("show", "HEAD:metrics/eval.json"), "git show"))
    ppl = changed["metrics/eval.json"]["ppl"]
    assert ppl["old"] == head_eval["ppl"] and ppl["new"] != ppl["old"]
    assert ppl["diff"] == pytest.approx(ppl["new"] - ppl["old"])

    every = json.loads(ok(repo.dvc("metrics", "diff", "--all", "HEAD", lr_exp.name, "--json"), "dvc metrics diff"))
    for path, key in METRIC_COLUMNS:
        assert key in every[path], (path, key)
    assert every["metrics/model.json"]["params_total"]["diff"] == 0


def readme_block(containing: str) -> list[str]:
    """The command lines of the README code block that contains ``containing``."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```[a-z]*\n(.*?)```", text, re.S) if containing in b]
    assert len(blocks) == 1, blocks
    return [ln for ln in blocks[0].splitlines() if ln.strip()]


def wait_for_queue(repo: PipelineRepo, timeout_s: float = 600) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ok(repo.dvc("queue", "status"), "dvc queue status")
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def test_readme_experiments_block(lr_exp: Exp):
    """The README's Experiments block, line by line as written: one run, a queued grid, the comparisons, apply."""
    repo = lr_exp.repo  # the workspace as the block's first line (lr_exp) left it: lr 0.003 applied
    lines = readme_block("dvc exp run --queue")
    assert [re.sub(r"\s+#\s.*$", "", ln).split(" <")[0] for ln in lines] == [
        "dvc exp run -S pretrain.lr=0.003", "dvc exp run --queue -S 'pretrain.lr=0.001,0.002,0.003'",
        "dvc queue start -j 1", "dvc exp show --only-changed --drop 'Created|State|Executor|data/|metrics/'",
        "dvc exp show --drop '.*' --keep 'Experiment|pretrain\\.lr|ppl|top1|cloze@1|tok_s' --sort-by ppl --md",
        "dvc params diff main", "dvc metrics diff main", "dvc plots diff main", "dvc exp apply"], lines
    one, queue, start, show, md, pdiff, mdiff, plots, apply = lines
    assert one == readme_command(f"dvc exp run -S pretrain.lr={LR} ")  # lr_exp ran it, as written

    out = ok(run_readme(repo, queue), queue)
    names = re.findall(r"^Queued experiment '([^']+)'", out, re.M)
    assert len(names) == 3, out
    ok(run_readme(repo, start), start)  # its worker exits by itself once idle (`dvc queue stop` would leave
    status = wait_for_queue(repo)       # a shutdown request that stops the next worker after one task)
    for n in names:
        assert re.search(rf"\b{re.escape(n)}\b.*\sSuccess\s*$", status, re.M), status

    table = ok(run_readme(repo, show, env={"COLUMNS": "120"}), show)
    assert "…" not in table and max(map(len, table.splitlines())) <= 120, table  # nothing cut, nothing wider
    header = table.splitlines()[1].split()
    assert header[0] == "Experiment" and "pretrain.lr" in header and {"ppl", "top1", "tok_s"} <= set(header), table
    assert set(header) - {"Experiment", "pretrain.lr"} <= HEADLINE, table  # no descriptive metric columns
    for lr in ("0.001", "0.002", "0.003"):
        assert re.search(rf"\b{lr}\b", table), table
    rows = [r for r in ok(run_readme(repo, md), md).splitlines() if r.strip()]
    assert [c.strip() for c in rows[0].strip("|").split("|")] == ["Experiment", "tok_s", "ppl", "top1", "cloze@1",
                                                                   "pretrain.lr"], rows
    assert len(rows) == 2 + 2 + 4 and all(r.startswith("|") for r in rows), rows  # workspace, main, 4 exps
    assert "0.003" in ok(run_readme(repo, pdiff), pdiff)
    assert "ppl" in ok(run_readme(repo, mdiff), mdiff)
    ok(run_readme(repo, plots), plots)
    ok(run_readme(repo, apply.replace("<exp-name>", names[-1])), apply)
    assert repo.params()["pretrain"]["lr"] in (0.001, 0.002, 0.003)
    ok(repo.git("reset", "-q", "--hard", "HEAD~1"), "git reset")  # back to the pipeline run for the tests after
    ok(repo.dvc("checkout", "-f"), "dvc checkout")
    assert ok(repo.git("status", "--porcelain", "params.yaml"), "git status") == ""  # committed


class Grid:
    def __init__(self, repo: PipelineRepo, names: list[str], status: str, logs: dict[str, str]):
        self.repo, self.names, self.status, self.logs = repo, names, status, logs


def _queue_status(repo: PipelineRepo) -> str:
    return ok(repo.dvc("queue", "status"), "dvc queue status")


def _stop_workers(repo: PipelineRepo, timeout: float = 90) -> None:
    repo.dvc("queue", "stop")
    deadline = time.monotonic() + timeout
    while "0 active, 0 idle" not in _queue_status(repo):
        if time.monotonic() > deadline:
            repo.dvc("queue", "stop", "--kill")
            pytest.fail(f"the dvc queue worker did not stop:\n{_queue_status(repo)}")
        time.sleep(2)


@pytest.fixture(scope="module")
def grid(lr_exp: Exp) -> Grid:
    """`dvc exp run --queue -S evaluate.seed=1,2` from HEAD, run by `dvc queue start -j 1`."""
    repo = lr_exp.repo
    ok(repo.git("checkout", "--", "."), "git checkout")  # back to HEAD from the applied experiment
    ok(repo.dvc("checkout"), "dvc checkout")
    seeds = ",".join(map(str, GRID_SEEDS))
    out = ok(repo.dvc("exp", "run", "--queue", "-S", f"evaluate.seed={seeds}"), "dvc exp run --queue")
    names = re.findall(r"^Queued experiment '([^']+)'", out, re.M)
    assert len(names) == len(GRID_SEEDS), out
    try:
        ok(repo.dvc("queue", "start", "-j", "1"), "dvc queue start")
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            status = _queue_status(repo)
            states = {n: re.search(rf"\b{re.escape(n)}\b.*\s(\w+)\s*$", status, re.M) for n in names}
            if all(m and m.group(1) in ("Success", "Failed") for m in states.values()):
                break
            assert time.monotonic() < deadline, f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}"
            time.sleep(3)
        logs = {n: repo.dvc("queue", "logs", n)[1] for n in names}
    finally:
        _stop_workers(repo)
    return Grid(repo, names, status, logs)


def test_grid_produces_two_experiments(grid: Grid):
    assert "Failed" not in grid.status, grid.status + "\n".join(grid.logs.values())
    rows = exp_rows(json.loads(ok(grid.repo.dvc("exp", "show", "--json"), "dvc exp show --json")))
    head_eval = grid.repo.read_json("metrics/eval.json")
    model_hash = rows["main"]["outs"]["data/model"]["hash"]
    evals = {}
    for name in grid.names:
        data = rows[name]
        params = data["params"]["params.yaml"]["data"]
        assert params["pretrain"]["lr"] == 0.002  # queued from HEAD, not from the applied lr experiment
        assert data["outs"]["data/model"]["hash"] == model_hash  # the committed model, evaluated again
        evals[params["evaluate"]["seed"]] = data["metrics"]["metrics/eval.json"]["data"]
    assert sorted(evals) == list(GRID_SEEDS)
    # another masking seed: another evaluation of the same model
    assert evals[1] != evals[2] and head_eval not in evals.values()
    assert all(ev["ppl"] > 0 for ev in evals.values())


def test_grid_reruns_only_evaluate(grid: Grid):
    """A queued experiment runs in a fresh temporary workspace; one that changes only an evaluate param
    reruns evaluate (and the report, whose model card states its results) and takes everything else, the
    trained model included, as it is."""
    for name, log in grid.logs.items():
        assert stages_run(log) == ["evaluate", "fill_mask_report"], f"{name}:\n{log[-3000:]}"
