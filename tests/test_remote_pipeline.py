"""Issue 4's promise, end to end, for a shared directory, SSH and S3 remotes: the full pipeline
runs once, is pushed, and a teammate's fresh clone pulls it and has nothing left to run.

Repo A (tiny params, built once for the module) runs `dvc repro`, commits dvc.lock and metrics/,
and pushes to each remote in turn. For each remote:

* a fresh `git clone` B configures the same remote (credentials: .dvc/config.local, which is
  not cloned), `dvc pull`s, and then `dvc repro` runs nothing, `dvc status` is clean and the
  data and metrics are byte-identical to A's;
* B changes `pretrain.lr`: only pretrain, evaluate and fill_mask_report run; the data stages
  and build_model come from the pulled cache;
* a third clone C pulls only the trained model (`dvc pull pretrain`) and uses it in a
  fill-mask pipeline.

Servers come from tests/servers.py (real sshd, Swift+s3api on 127.0.0.1); a missing server
binary skips its tests, or fails them when CI=true.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import servers
from pipeline_repo import STAGES, PipelineRepo, make_repo, stages_run

pytestmark = [pytest.mark.slow, pytest.mark.servers]

REMOTES = ("local", "ssh", "s3")
DATA = ("data/corpus", "data/tokenizer", "data/tokenized", "data/model_init", "data/model")
METRICS_GLOBS = ("metrics/*.json", "metrics/*.csv", "metrics/*.md")
CHECKPOINTS = "data/checkpoints"


def ok(result: tuple[int, str, str], what: str) -> str:
    rc, out, err = result
    assert rc == 0, f"{what} failed ({rc}):\n{out[-3000:]}\n{err[-3000:]}"
    return out


def metrics_files(repo: PipelineRepo) -> dict[str, bytes]:
    files = sorted({p for pattern in METRICS_GLOBS for p in repo.path.glob(pattern)})
    return {str(p.relative_to(repo.path)): p.read_bytes() for p in files}


def assert_no_secrets(repo: PipelineRepo, remote) -> None:
    """Credentials live in .dvc/config.local only, which git does not track."""
    tracked = [n for n in ok(repo.git("ls-files", "-z"), "git ls-files").split("\0") if n]
    assert ".dvc/config.local" not in tracked
    for secret in filter(None, remote.secrets()):
        for name in [*tracked, ".dvc/config"]:
            assert secret.encode() not in (repo.path / name).read_bytes(), f"a secret leaked into {name}"


class Origin:
    def __init__(self, repo: PipelineRepo):
        self.repo = repo
        self.metrics = metrics_files(repo)
        self.data = {rel: repo.tree_hashes(rel) for rel in DATA}


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Origin:
    """Repo A: the full pipeline run once and committed (dvc.lock, metrics/)."""
    repo = make_repo(tmp_path_factory.mktemp("remote_pipeline") / "a")
    out = ok(repo.repro(), "dvc repro in A")
    assert stages_run(out) == list(STAGES)
    ok(repo.git("add", "-A"), "git add")
    ok(repo.git("commit", "-q", "-m", "pipeline run"), "git commit")
    assert ok(repo.git("status", "--porcelain"), "git status") == ""
    return Origin(repo)


@pytest.fixture(scope="module", params=REMOTES)
def remote(request, tmp_path_factory):
    factory = {"local": servers.local_remote, "ssh": servers.sshd_server, "s3": servers.s3_server}
    ctx = factory[request.param](tmp_path_factory.mktemp(f"{request.param}-server"))
    try:
        r = ctx.__enter__()
    except servers.ServerUnavailable as e:
        servers.skip_or_fail(f"{request.param} server unavailable: {e}")
    try:
        yield r
    finally:
        ctx.__exit__(None, None, None)


def remote_env(remote, repo: PipelineRepo) -> dict:
    return remote.env(repo.env())


def remote_name(remote) -> str:
    """One DVC remote name per kind: A holds all three (each with its own config.local section)."""
    return {servers.LocalRemote: "shared", servers.SshRemote: "ssh", servers.S3Remote: "s3"}[type(remote)]


@pytest.fixture(scope="module")
def pushed(origin: Origin, remote) -> str:
    """A configured for this remote (as its default; not committed: every clone configures it) and pushed."""
    a = origin.repo
    remote.configure(a.path, name=remote_name(remote), base_env=a.env())
    return ok(a.dvc("push", env=remote_env(remote, a)), "dvc push from A")


def clone(origin: Origin, remote, dest: Path) -> PipelineRepo:
    ok(origin.repo.git("clone", "-q", str(origin.repo.path), str(dest)), "git clone")
    repo = PipelineRepo(dest)
    assert not (dest / ".dvc" / "config.local").exists()  # the credentials stay behind in A
    remote.configure(repo.path, name=remote_name(remote), base_env=repo.env())
    return repo


class Clone:
    def __init__(self, repo: PipelineRepo, pull_out: str, status_after_pull: dict):
        self.repo, self.pull_out, self.status_after_pull = repo, pull_out, status_after_pull


@pytest.fixture(scope="module")
def clone_b(origin: Origin, remote, pushed, tmp_path_factory) -> Clone:
    """A teammate's fresh clone B: configure the remote, `dvc pull`."""
    b = clone(origin, remote, tmp_path_factory.mktemp(f"clone-b-{type(remote).__name__}") / "b")
    env = remote_env(remote, b)
    pull_out = ok(b.dvc("pull", env=env), "dvc pull in B")
    status = json.loads(ok(b.dvc("status", "--json", env=env), "dvc status"))
    return Clone(b, pull_out, status)


def test_push_keeps_credentials_local(origin: Origin, remote, pushed):
    assert "pushed" in pushed, pushed
    assert_no_secrets(origin.repo, remote)


def test_pull_then_repro_runs_nothing(origin: Origin, remote, clone_b: Clone):
    b = clone_b.repo
    env = remote_env(remote, b)
    assert "fetched" in clone_b.pull_out, clone_b.pull_out
    assert not (b.path / CHECKPOINTS).exists()  # nothing to create by hand: pretrain's checkpoints are no out
    assert {rel: b.tree_hashes(rel) for rel in DATA} == origin.data
    out = ok(b.repro(env=env), "dvc repro in B")
    assert stages_run(out) == [], out
    assert "Data and pipelines are up to date" in out, out
    assert json.loads(ok(b.dvc("status", "--json", env=env), "dvc status")) == {}
    assert json.loads(ok(b.dvc("status", "--cloud", "--json", env=env), "dvc status --cloud")) == {}
    assert metrics_files(b) == origin.metrics
    assert set(origin.metrics) >= {"metrics/eval.json", "metrics/train.json", "metrics/curve_train.csv",
                                   "metrics/fill_mask.md"}
    assert ok(b.git("status", "--porcelain", "--", "dvc.lock", "metrics"), "git status") == ""
    assert_no_secrets(b, remote)


def test_status_clean_right_after_pull(clone_b: Clone):
    """`dvc status` right after `dvc pull` in a fresh clone: nothing to do by hand first."""
    assert clone_b.status_after_pull == {}


def test_param_change_reruns_only_training(origin: Origin, remote, clone_b: Clone):
    """After a pull, a new learning rate reruns pretrain and what reads the model, nothing before it.

    The rerun reads only B's local cache, the same whichever remote filled it, so the real
    `dvc repro` runs for the shared-directory remote (always available); for SSH and S3,
    `dvc repro --dry` checks the same decision for the data stages and build_model.
    """
    b = clone_b.repo
    b.set_params({"pretrain.lr": 0.003})
    env = remote_env(remote, b)
    if not isinstance(remote, servers.LocalRemote):
        out = ok(b.repro("--dry", env=env), "dvc repro --dry in B after pretrain.lr change")
        # --dry cannot know whether the model will change; the report reads the pretrain params (its model card)
        assert stages_run(out) == ["pretrain", "fill_mask_report"], out
        for stage in ("fetch_corpus", "train_tokenizer", "tokenize_group", "build_model"):
            assert f"Stage '{stage}' didn't change, skipping" in out, out
        return
    out = ok(b.repro(env=env), "dvc repro in B after pretrain.lr change")
    assert stages_run(out) == ["pretrain", "evaluate", "fill_mask_report"], out
    for rel in ("data/corpus", "data/tokenizer", "data/tokenized", "data/model_init"):
        assert b.tree_hashes(rel) == origin.data[rel], rel
    assert b.tree_hashes("data/model") != origin.data["data/model"]
    metrics = metrics_files(b)
    assert metrics["metrics/model.json"] == origin.metrics["metrics/model.json"]
    assert metrics["metrics/train.json"] != origin.metrics["metrics/train.json"]


@pytest.mark.parametrize("target", ["pretrain", "data/model"])
def test_pull_only_the_model(origin: Origin, remote, pushed, target, tmp_path):
    c = clone(origin, remote, tmp_path / "c")
    out = ok(c.dvc("pull", target, env=remote_env(remote, c)), f"dvc pull {target}")
    assert "data/model" in out, out
    present = sorted(p.name for p in (c.path / "data").iterdir())
    assert present == ["model", "raw"], present  # raw/: the corpus, from git
    assert c.tree_hashes("data/model") == origin.data["data/model"]

    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(c.path / "data/model"), device="cpu", top_k=3)
    preds = fill(f"The baker sold {fill.tokenizer.mask_token} warm coat.")
    assert len(preds) == 3 and all(isinstance(p["token_str"], str) and 0 <= p["score"] <= 1 for p in preds)
