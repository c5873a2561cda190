"""Push to and pull from real DVC remotes: a local directory, sshd, and Swift's S3 API.

Repo A runs a one-stage pipeline and pushes; a git clone B reconfigures the remote's
credentials (config.local is not cloned), pulls, and must find the outputs byte-identical and
nothing to reproduce. The servers come from tests/servers.py; a missing server binary skips
the test, or fails it when CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import servers

pytestmark = [pytest.mark.slow, pytest.mark.servers]

GIT_ID = {
    "GIT_AUTHOR_NAME": "mlmpipe tests",
    "GIT_AUTHOR_EMAIL": "tests@mlmpipe.invalid",
    "GIT_COMMITTER_NAME": "mlmpipe tests",
    "GIT_COMMITTER_EMAIL": "tests@mlmpipe.invalid",
}

MAKE_PY = """\
import pathlib, yaml
params = yaml.safe_load(open("params.yaml"))
pathlib.Path("result.txt").write_text((params["greeting"] + "\\n") * params["repeat"])
shards = pathlib.Path("shards")
shards.mkdir(exist_ok=True)
for i in range(params["shards"]):
    (shards / f"shard-{i}.bin").write_bytes(bytes(range(256)) * (i + 1) + params["greeting"].encode())
"""


def sh(argv, cwd, env, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} (in {cwd}) exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def dvc(cwd, env, *args, check=True) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-m", "dvc", *args], cwd, env, check)


def git(cwd, env, *args) -> subprocess.CompletedProcess:
    return sh(["git", *args], cwd, {**env, **GIT_ID})


@pytest.fixture(params=["local", "ssh", "s3"])
def remote(request, tmp_path):
    factory = {"local": servers.local_remote, "ssh": servers.sshd_server, "s3": servers.s3_server}
    ctx = factory[request.param](tmp_path / f"{request.param}-server")
    try:
        r = ctx.__enter__()
    except servers.ServerUnavailable as e:
        servers.skip_or_fail(f"{request.param} server unavailable: {e}")
    pids = [r.pid] if isinstance(r, servers.SshRemote) else list(getattr(r, "pids", {}).values())
    try:
        yield r
    finally:
        ctx.__exit__(None, None, None)
    leftover = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not leftover, f"server processes still running after the context closed: {leftover}"


def make_repo(path: Path, env) -> None:
    path.mkdir()
    git(path, env, "init", "-q", "-b", "main")
    dvc(path, env, "init", "-q")
    dvc(path, env, "config", "core.analytics", "false")
    dvc(path, env, "config", "core.check_update", "false")
    (path / "make.py").write_text(MAKE_PY)
    (path / "params.yaml").write_text("greeting: hello remote\nrepeat: 3\nshards: 3\n")
    (path / "dvc.yaml").write_text(
        textwrap.dedent(
            f"""\
            stages:
              make:
                cmd: {sys.executable} make.py
                deps: [make.py]
                params: [greeting, repeat, shards]
                outs: [result.txt, shards]
            """
        )
    )


def outputs(repo: Path) -> dict[str, bytes]:
    files = [repo / "result.txt", *sorted((repo / "shards").iterdir())]
    return {str(f.relative_to(repo)): f.read_bytes() for f in files}


def stored_objects(remote) -> list[str]:
    """The keys/paths of what the remote holds (looked at directly, not through dvc)."""
    if isinstance(remote, servers.S3Remote):
        client = remote.client()
        try:
            listing = client.list_objects_v2(Bucket=remote.bucket, Prefix="store/")
        finally:
            client.close()
        return [o["Key"] for o in listing.get("Contents", [])]
    return [str(p) for p in remote.path.rglob("*") if p.is_file()]


def assert_no_secrets(repo: Path, remote, env) -> None:
    secrets = [s for s in remote.secrets() if s]
    config = (repo / ".dvc" / "config").read_text()
    for secret in secrets:
        assert secret not in config, f"secret leaked into {repo}/.dvc/config"
    local_settings = remote.local_settings()
    if local_settings:
        local = (repo / ".dvc" / "config.local").read_text()
        for key, value in local_settings.items():
            assert f"{key} = {value}" in local, local
            assert key not in config, f"{key} is in {repo}/.dvc/config"
    tracked = git(repo, env, "ls-files", "-z").stdout.split("\0")
    assert ".dvc/config.local" not in tracked
    for name in filter(None, tracked):
        data = (repo / name).read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"secret leaked into tracked file {name}"


def test_push_clone_pull(remote, tmp_path):
    env = remote.env()
    a, b = tmp_path / "a", tmp_path / "b"
    make_repo(a, env)
    remote.configure(a)
    assert remote.url in (a / ".dvc" / "config").read_text()

    dvc(a, env, "repro", "-q")
    git(a, env, "add", "-A")
    git(a, env, "commit", "-q", "-m", "pipeline")
    pushed = dvc(a, env, "push")
    assert "pushed" in pushed.stdout, pushed.stdout
    assert len(stored_objects(remote)) == 5  # 4 files + the directory's .dir listing
    expected = outputs(a)
    assert_no_secrets(a, remote, env)

    git(tmp_path, env, "clone", "-q", str(a), str(b))
    assert not (b / ".dvc" / "config.local").exists()
    assert not (b / "result.txt").exists()
    remote.configure(b)  # credentials again: config.local stays behind in A
    assert git(b, env, "status", "--porcelain").stdout == ""  # .dvc/config as committed
    dvc(b, env, "pull")
    assert outputs(b) == expected

    assert json.loads(dvc(b, env, "status", "--json").stdout) == {}
    assert json.loads(dvc(b, env, "status", "--cloud", "--json").stdout) == {}
    repro = dvc(b, env, "repro")
    assert "didn't change, skipping" in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date" in repro.stdout, repro.stdout
    assert outputs(b) == expected
    assert_no_secrets(b, remote, env)
    # B got its data from the remote: nothing of A's cache is shared with it.
    assert not os.path.samefile(a / ".dvc" / "cache", b / ".dvc" / "cache")


@pytest.fixture
def sshd(tmp_path):
    try:
        ctx = servers.sshd_server(tmp_path / "ssh-server")
        r = ctx.__enter__()
    except servers.ServerUnavailable as e:
        servers.skip_or_fail(f"ssh server unavailable: {e}")
    try:
        yield r
    finally:
        ctx.__exit__(None, None, None)


def test_ssh_host_key_strict_client(sshd, tmp_path):
    """The server's generated host key is the one in its known_hosts, and nothing else is."""
    ok = sh(sshd.ssh_argv("echo", "hi"), tmp_path, os.environ)
    assert ok.stdout.strip() == "hi"
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    argv = [a.replace(str(sshd.known_hosts), str(empty)) for a in sshd.ssh_argv("true")]
    refused = sh(argv, tmp_path, os.environ, check=False)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr, refused.stderr


def test_dvc_ssh_does_not_check_host_keys(sshd, tmp_path):
    """Pins a fact the fixtures rely on: dvc-ssh/sshfs connect with known_hosts=None.

    If this starts failing, dvc-ssh verifies host keys now: make SshRemote.env() point HOME at
    a directory whose .ssh/known_hosts is sshd.known_hosts.
    """
    env = sshd.env()
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, env, "init", "-q")
    dvc(repo, env, "init", "-q")
    (repo / "data.txt").write_text("data\n")
    dvc(repo, env, "add", "-q", "data.txt")
    sshd.configure(repo)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    other = home / "other_host_key"
    sh([servers.SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(other)], tmp_path, os.environ)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    assert wrong != sshd.host_public_key
    (home / ".ssh" / "known_hosts").write_text(f"[{sshd.host}]:{sshd.port} {wrong}\n")
    pushed = dvc(repo, {**env, "HOME": str(home)}, "push", check=False)
    assert pushed.returncode == 0, (
        "dvc push now refuses an unknown SSH host key; give dvc a known_hosts "
        f"(see this test's docstring):\n{pushed.stdout}{pushed.stderr}"
    )
    assert any(p.is_file() for p in sshd.path.rglob("*"))


class Interrupted(BaseException):
    """Not an Exception, like KeyboardInterrupt."""


def test_server_stopped_after_exception(tmp_path):
    try:
        with servers.sshd_server(tmp_path / "ssh-server") as r:
            pid, port = r.pid, r.port
            raise Interrupted
    except servers.ServerUnavailable as e:
        servers.skip_or_fail(f"ssh server unavailable: {e}")
    except Interrupted:
        pass
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(OSError):
        servers._tcp_answers(port)
