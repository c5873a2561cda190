"""Real servers for DVC remote tests: OpenSSH's sshd and OpenStack Swift with its S3 layer.

Both servers come from Debian packages (see ``remote_pkgs`` in ``.ci/system-deps.sh``), listen
on 127.0.0.1 only, on free ports, keep every file they write (config, keys, rings, data, logs)
under the ``workdir`` given to them, and are stopped by PID when the context manager exits,
whether the body raised or not.

    with sshd_server(tmp_path / "sshd") as remote:      # -> SshRemote
        env = remote.configure(repo_dir)                 # `dvc remote add -d` + config.local
        subprocess.run([..., "dvc", "push"], cwd=repo_dir, env=env, check=True)

``configure(repo)`` writes only the URL (and non-secret settings) to ``.dvc/config``; keys,
key paths and secrets go to ``.dvc/config.local``, which git does not track. It returns the
environment to run ``dvc`` in (``os.environ`` plus DVC's analytics turned off).

Host keys: each sshd gets a freshly generated host key, and ``SshRemote.known_hosts`` is a
known_hosts file that trusts exactly that key (``SshRemote.ssh_argv()`` runs OpenSSH's client
with ``StrictHostKeyChecking=yes`` against it). DVC itself does not check SSH host keys:
sshfs (under dvc-ssh 4.x) calls ``asyncssh.connect(known_hosts=None)`` unless told
otherwise, and dvc-ssh has no remote option to tell it, so ``~/.ssh/known_hosts`` and
``UserKnownHostsFile`` are never read by ``dvc push/pull`` (test_remote_servers.py pins this).

A missing binary raises :class:`ServerUnavailable`; tests turn that into a skip, or into a
failure when ``CI=true``, with :func:`skip_or_fail`.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
MEMCACHED = "/usr/bin/memcached"
SWIFT_PYTHON = "/usr/bin/python3"  # Swift runs on Debian's Python, never on the venv's
SWIFT_CONF = "/etc/swift/swift.conf"  # hash prefix/suffix and storage policies (Debian's default)
SWIFT_BINS = {
    "account": "/usr/bin/swift-account-server",
    "container": "/usr/bin/swift-container-server",
    "object": "/usr/bin/swift-object-server",
    "proxy": "/usr/bin/swift-proxy-server",
}

S3_ACCESS_KEY = "test:tester"  # tempauth user `tester` in account `test`; its key is random
S3_REGION = "us-east-1"  # must equal s3api's `location` for SigV4

START_TIMEOUT = 30.0

# DVC would otherwise send usage analytics (and may check Studio) over the network.
DVC_OFFLINE_ENV = {"DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "true"}


class ServerUnavailable(RuntimeError):
    """The server cannot be started here (a binary or package is missing); ``str()`` says why."""


class ServerStartError(RuntimeError):
    """The binaries are present but the server did not come up; the message has its log tail."""


def skip_or_fail(reason: str):
    """Skip the current test, but fail it when ``CI=true`` (CI must have every server)."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, so not skipping: {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# Process handling


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


try:  # looked up here, not in the forked child (other threads may hold the loader's locks)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not glibc/Linux
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # If the test process is killed outright (SIGKILL, no teardown), the kernel kills the
    # server too.
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _children_of(pid: int) -> list[int]:
    """All descendants of ``pid`` (read from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the ")" that closes the command name: state, ppid, ...
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def _kill_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class _Processes:
    """The processes one server context started; ``stop()`` ends each of them by its PID."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None):
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                close_fds=True,
            )
        self.started.append((name, proc, log))
        return proc

    def check_alive(self) -> None:
        for name, proc, log in self.started:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{name} exited with status {proc.returncode}; {log}:\n{tail(log)}"
                )

    def stop(self) -> None:
        for _name, proc, _log in reversed(self.started):
            if proc.poll() is None:
                # Children first (e.g. sshd's per-connection processes, which leave its
                # session), while their parent still lives to reap them: orphans would go to
                # PID 1, which need not reap anything.
                kids = _children_of(proc.pid)
                for kid in kids:
                    _kill_pid(kid, signal.SIGTERM)
                _wait_gone(kids, timeout=2)
                _kill_pid(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _kill_pid(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
                for kid in kids:
                    if Path(f"/proc/{kid}").exists():
                        _kill_pid(kid, signal.SIGKILL)
        self.started.clear()


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.02)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _wait_until(what: str, probe, procs: _Processes, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if probe():
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    logs = "\n".join(f"--- {log}:\n{tail(log)}" for _n, _p, log in procs.started)
    raise ServerStartError(f"{what} did not answer within {timeout:.0f}s (last error: {last})\n{logs}")


def _tcp_answers(port: int, expect: bytes | None = None) -> bool:
    with socket.create_connection((HOST, port), timeout=1) as s:
        if expect is None:
            return True
        s.settimeout(2)
        return s.recv(len(expect)) == expect


def _http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _need(*paths: str) -> None:
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if missing:
        raise ServerUnavailable(
            f"missing {', '.join(missing)} (install the packages in remote_pkgs of "
            ".ci/system-deps.sh: `bash .ci/system-deps.sh`)"
        )


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------------------------
# Configuring a DVC repo


def _dvc(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def _merge_env(overrides: Mapping[str, str | None], base: Mapping[str, str] | None) -> dict:
    env = dict(os.environ if base is None else base)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


@dataclass
class _Remote:
    url: str
    # Environment changes `dvc` needs for this remote (None removes a variable).
    env_overrides: dict[str, str | None] = field(default_factory=dict)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with this remote's overrides applied, and with
        DVC's analytics and Studio reporting off (the tests reach nothing but 127.0.0.1)."""
        return _merge_env({**DVC_OFFLINE_ENV, **self.env_overrides}, base)

    def shared_settings(self) -> dict[str, str]:
        """Non-secret settings that ``configure`` writes to ``.dvc/config`` (git-tracked)."""
        return {}

    def local_settings(self) -> dict[str, str]:
        """Credentials that ``configure`` writes to ``.dvc/config.local`` only."""
        return {}

    def configure(self, repo: str | os.PathLike, name: str = "storage", base_env=None) -> dict[str, str]:
        """Make ``name`` the default remote of the DVC repo at ``repo``; return the env for dvc.

        The URL goes to ``.dvc/config`` through ``dvc remote add -d`` (with the non-secret
        ``shared_settings()``); ``local_settings()`` (credentials, key paths) go to
        ``.dvc/config.local`` only. Call it again in a clone: config.local is not cloned.
        """
        repo = Path(repo)
        env = self.env(base_env)
        _dvc(repo, "remote", "add", "-f", "-d", name, self.url, env=env)
        for key, value in self.shared_settings().items():
            _dvc(repo, "remote", "modify", name, key, value, env=env)
        for key, value in self.local_settings().items():
            _dvc(repo, "remote", "modify", "--local", name, key, value, env=env)
        return env

    def secrets(self) -> list[str]:
        """Strings that must never appear in ``.dvc/config`` or any git-tracked file."""
        return []


@dataclass
class LocalRemote(_Remote):
    path: Path = Path()


@contextlib.contextmanager
def local_remote(workdir: str | os.PathLike) -> Iterator[LocalRemote]:
    """A plain directory as remote (no server), with the same interface as the others."""
    path = Path(workdir).resolve() / "store"
    path.mkdir(parents=True, exist_ok=True)
    yield LocalRemote(url=str(path), path=path)


# --------------------------------------------------------------------------------------------
# SSH: Debian's openssh-server


@dataclass
class SshRemote(_Remote):
    host: str = HOST
    port: int = 0
    user: str = ""
    keyfile: Path = Path()  # client private key (its path goes to config.local only)
    host_public_key: str = ""  # "ssh-ed25519 AAAA...", generated for this server
    known_hosts: Path = Path()  # a known_hosts file that trusts this server only
    path: Path = Path()  # remote directory on the server
    pid: int = 0

    def ssh_argv(self, *command: str) -> list[str]:
        """OpenSSH client argv that checks this server's host key strictly (for inspection)."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.keyfile),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-F", "/dev/null",
            f"{self.user}@{self.host}", *command,
        ]

    def local_settings(self) -> dict[str, str]:
        return {"keyfile": str(self.keyfile)}

    def secrets(self) -> list[str]:
        # the key's path and each line of its base64 body (a copied key keeps its line breaks)
        body = self.keyfile.read_text().strip().splitlines()[1:-1]
        return [str(self.keyfile), *(line for line in body if len(line) >= 16)]


@contextlib.contextmanager
def sshd_server(workdir: str | os.PathLike) -> Iterator[SshRemote]:
    """Run sshd on 127.0.0.1:<free port> with pubkey auth for a fresh key; yield an SshRemote."""
    _need(SSHD, SSH_KEYGEN)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()

    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "id_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)])
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)

    # sshd refuses to start without its privilege separation directory (Debian's unit makes it).
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {HOST}:{port}",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                f"AllowUsers {user}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "HostbasedAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitUserEnvironment no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "AllowAgentForwarding no",
                "PrintMotd no",
                "UseDNS no",
                "MaxStartups 50",
                "MaxSessions 50",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    _run([SSHD, "-t", "-f", str(config)])  # config check: fails loudly here, not as a timeout

    host_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{port} {host_pub}\n")

    store = workdir / "store"
    store.mkdir(exist_ok=True)

    procs = _Processes(workdir)
    try:
        # -D: stay in the foreground (the PID we hold is sshd's); -e: log to stderr -> sshd.log
        proc = procs.start("sshd", [SSHD, "-D", "-e", "-f", str(config)])
        _wait_until(f"sshd on {HOST}:{port}", lambda: _tcp_answers(port, b"SSH-"), procs)
        yield SshRemote(
            url=f"ssh://{user}@{HOST}:{port}{store}",
            port=port,
            user=user,
            keyfile=client_key,
            host_public_key=host_pub,
            known_hosts=known_hosts,
            path=store,
            pid=proc.pid,
        )
    finally:
        procs.stop()


# --------------------------------------------------------------------------------------------
# S3: OpenStack Swift (Debian) with the s3api and tempauth middlewares


@dataclass
class S3Remote(_Remote):
    endpoint: str = ""
    bucket: str = ""
    access_key: str = S3_ACCESS_KEY
    secret_key: str = ""  # random for each server, so a leak check can't match by accident
    region: str = S3_REGION
    pids: dict[str, int] = field(default_factory=dict)

    def shared_settings(self) -> dict[str, str]:
        return {"endpointurl": self.endpoint, "region": self.region}

    def local_settings(self) -> dict[str, str]:
        return {
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def secrets(self) -> list[str]:
        return [self.secret_key]

    def client(self):
        """A botocore S3 client for this server (path-style, checksums only where required)."""
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


_SWIFT_COMMON = """\
[DEFAULT]
bind_ip = {host}
bind_port = {port}
workers = 0
user = {user}
swift_dir = {etc}
devices = {devices}
mount_check = false
disable_fallocate = true
fallocate_reserve = 0
log_name = {name}
log_level = INFO
log_udp_host = {host}
log_udp_port = {log_port}
"""

_SWIFT_BACKEND = """
[pipeline:main]
pipeline = {name}-server

[app:{name}-server]
use = egg:swift#{name}

[{name}-replicator]

[{name}-updater]

[{name}-auditor]
"""

_SWIFT_PROXY = """
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = {host}:{memcache_port}

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:s3api]
use = egg:swift#s3api
location = {region}

[filter:tempauth]
use = egg:swift#tempauth
user_{account}_{user_name} = {secret} .admin

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
"""


class _UdpSink:
    """Receives the Swift daemons' syslog datagrams on 127.0.0.1 and appends them to a file.

    Without it Swift falls back to syslog over UDP to localhost:514 (there is no /dev/log).
    """

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="swift-syslog", daemon=True)

    def start(self) -> None:
        """Drain from now on (datagrams sent before wait in the socket's buffer)."""
        self._thread.start()

    def _drain(self) -> None:
        with open(self.path, "ab") as out:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                out.write(data.rstrip(b"\0\n") + b"\n")
                out.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()


_RING_SCRIPT = """
import sys
from swift.common.ring import RingBuilder
etc, host = sys.argv[1], sys.argv[2]
for arg in sys.argv[3:]:
    name, port = arg.split("=")
    builder = RingBuilder(6, 1, 1)  # part_power 6, 1 replica, min_part_hours 1
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": host, "port": int(port),
                     "replication_ip": host, "replication_port": int(port),
                     "device": "d1", "weight": 100.0, "meta": ""})
    builder.rebalance()
    builder.save(f"{etc}/{name}.builder")
    builder.get_ring().save(f"{etc}/{name}.ring.gz")
"""


def _build_rings(etc: Path, ports: dict[str, int]) -> None:
    """account/container/object rings: 1 replica on one device `d1` per server.

    This is what `swift-ring-builder X.builder create 6 1 1; ... add r1z1-IP:PORT/d1 100;
    ... rebalance` does, done by the same RingBuilder class in one Debian-Python process
    (the nine CLI runs cost several seconds of CPU on a 2-core machine).
    """
    names = ("account", "container", "object")
    proc = subprocess.run(
        [SWIFT_PYTHON, "-c", _RING_SCRIPT, str(etc), HOST, *(f"{n}={ports[n]}" for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    missing = [n for n in names if not (etc / f"{n}.ring.gz").exists()]
    if proc.returncode != 0 or missing:
        raise ServerStartError(f"building the Swift rings failed:\n{proc.stdout}{proc.stderr}")


def _check_swift() -> None:
    _need(SWIFT_PYTHON, MEMCACHED, *SWIFT_BINS.values())
    if not os.path.isfile(SWIFT_CONF):
        raise ServerUnavailable(f"missing {SWIFT_CONF} (shipped by Debian's swift package)")
    probe = subprocess.run(
        [SWIFT_PYTHON, "-c", "import swift.common.ring, swift.common.middleware.s3api.s3api, "
         "swift.common.middleware.tempauth"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise ServerUnavailable(f"Swift's s3api/tempauth do not import: {probe.stderr.strip()[-500:]}")


@contextlib.contextmanager
def s3_server(workdir: str | os.PathLike, bucket: str = "dvc-remote") -> Iterator[S3Remote]:
    """Run Swift (account, container, object, proxy with s3api + tempauth) and memcached on
    127.0.0.1, storage under ``workdir``; create ``bucket``; yield an S3Remote for
    ``s3://<bucket>/store`` (access key ``test:tester``, a random secret key, us-east-1)."""
    _check_swift()
    workdir = Path(workdir).resolve()
    etc = workdir / "etc"
    devices = workdir / "srv"
    for d in (etc, devices / "d1"):
        d.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()

    ports = {name: free_port() for name in ("account", "container", "object", "proxy", "memcached")}
    while len(set(ports.values())) < len(ports):  # free_port() may hand out a port twice
        ports = {name: free_port() for name in ports}

    account, user_name = S3_ACCESS_KEY.split(":")
    secret_key = "s3-secret-" + secrets.token_hex(16)
    procs = _Processes(workdir)
    sink = _UdpSink(workdir / "swift-syslog.log")
    try:
        for name in ("account", "container", "object", "proxy"):
            common = _SWIFT_COMMON.format(
                host=HOST, port=ports[name], user=user, etc=etc, devices=devices,
                name=f"{name}-server", log_port=sink.port,
            )
            if name == "proxy":
                body = _SWIFT_PROXY.format(
                    host=HOST, memcache_port=ports["memcached"], region=S3_REGION,
                    account=account, user_name=user_name, secret=secret_key,
                )
            else:
                body = _SWIFT_BACKEND.format(name=name)
            (etc / f"{name}-server.conf").write_text(common + body)

        procs.start(
            "memcached",
            [MEMCACHED, "-l", HOST, "-p", str(ports["memcached"]), "-U", "0", "-m", "16", "-u", user],
        )
        # Swift's daemons don't daemonize themselves and, with workers = 0, serve in one process.
        # Only the proxy reads the rings, so the backends start while the rings are built.
        swift_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir)}
        for name in ("account", "container", "object", "proxy"):
            if name == "proxy":
                _build_rings(etc, ports)
            procs.start(
                f"{name}-server",
                [SWIFT_PYTHON, SWIFT_BINS[name], str(etc / f"{name}-server.conf")],
                env=swift_env,
            )
        sink.start()  # only now: no fork (with its preexec_fn) happens while it runs here
        for name in ("memcached", "account", "container", "object"):
            _wait_until(f"{name} on {HOST}:{ports[name]}", lambda p=ports[name]: _tcp_answers(p), procs)
        _wait_until(
            f"swift proxy on {HOST}:{ports['proxy']}",
            lambda: _http_status(ports["proxy"], "/healthcheck") == 200,
            procs,
        )

        remote = S3Remote(
            url=f"s3://{bucket}/store",
            endpoint=f"http://{HOST}:{ports['proxy']}",
            bucket=bucket,
            secret_key=secret_key,
            pids={name: p.pid for name, p, _log in procs.started},
        )
        client = remote.client()
        try:
            client.create_bucket(Bucket=bucket)
        finally:
            client.close()
        yield remote
    finally:
        procs.stop()
        sink.close()
