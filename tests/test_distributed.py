"""Scale-out: the pretrain stage under a real multi-process launcher (torchrun, gloo, CPU), with DDP or with
FSDP (pretrain.fsdp), trains the loss curve of one process with the same global batch, and a run killed
mid-way resumes to the uninterrupted run's weights."""
import csv
import shutil

import pytest

from pipeline_repo import VENV_BIN, make_pretrain_ready, readme_command, run_readme, stages_run, tiny_params

pytestmark = pytest.mark.slow


def ok(result, what):
    rc, out, err = result
    assert rc == 0, f"{what} failed ({rc}):\n{out[-2000:]}\n{err[-2000:]}"
    return out


def curve(repo):
    with open(repo.path / "metrics" / "curve_train.csv", encoding="utf-8") as fh:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The stages before pretrain, run once: each run below copies this repo and reruns pretrain only."""
    return make_pretrain_ready(tmp_path_factory.mktemp("distributed") / "upstream", tiny_params())


def test_two_processes_match_one(tmp_path, upstream):
    """DDP (torchrun, 2 processes), two "nodes" on loopback, then FSDP (pretrain.fsdp, 2 processes) train the
    curve of one process; the sharded run saves a standard model, the one-process run's weights within float
    noise."""
    if shutil.which("torchrun", path=str(VENV_BIN)) is None:
        pytest.fail("torchrun is missing from the venv")
    params = tiny_params(pretrain={"max_steps": 8, "batch_size": 8, "log_every": 1, "eval_every": 4,
                                   "checkpoint_every": 100, "mixed_precision": "no"})
    repo = upstream.copy(tmp_path / "repo", params)
    out = ok(repo.repro(), "dvc repro (one process)")
    assert stages_run(out) == ["pretrain", "evaluate", "fill_mask_report"], out
    one, one_weights = curve(repo), weights(repo)
    ok(repo.git("add", "-A"), "git add")
    ok(repo.git("commit", "-q", "-m", "one process"), "git commit")
    cmd = readme_command("torchrun --standalone --nproc_per_node 2", "(gloo)")  # the README's line, as written
    rc, out, err = run_readme(repo, cmd)
    assert rc == 0, err[-2000:]
    assert repo.params()["pretrain"]["launcher"] == "torchrun --standalone --nproc_per_node 2"
    assert "pretrain" in stages_run(out) and "build_model" not in stages_run(out)
    two = curve(repo)
    assert repo.read_json("metrics/details/train.json")["processes"] == 2
    assert "FSDP" not in err
    nodes = two_nodes(repo)  # (the stage run directly: DVC's outputs change outside it, as on a cluster)

    rc, out, err = run_readme(repo, readme_command("pretrain.fsdp=true"))  # FSDP, as the README shows it
    assert rc == 0, err[-2000:]
    assert "pretrain" in stages_run(out) and "build_model" not in stages_run(out)
    assert "FSDP2: the weights of 11 tensors sharded over 2 processes" in err, err[-2000:]
    sharded = curve(repo)
    assert repo.read_json("metrics/details/train.json")["processes"] == 2
    for other in (two, nodes, sharded):
        assert [s for s, _ in other] == [s for s, _ in one] == list(range(1, 9))
        for (_, a), (_, b) in zip(one, other):
            assert b == pytest.approx(a, rel=2e-3, abs=2e-3)  # same masks and batches; only reduction order differs
    saved = weights(repo)  # a standard model: the one-process run's tensor names, shapes and dtypes
    assert {k: (v.shape, v.dtype) for k, v in saved.items()} == {k: (v.shape, v.dtype) for k, v in one_weights.items()}
    for k, v in saved.items():
        assert (v - one_weights[k]).abs().max() < 1e-3, k
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(repo.path / "data" / "model"))
    assert len(fill("The baker sold <mask> warm coat.", top_k=3)) == 3


def two_nodes(repo) -> list:
    """Two "nodes" (one torchrun each, one process per node, a c10d rendezvous on 127.0.0.1) run the pretrain
    stage of ``repo``; rank 0 writes the outputs. Returns their training curve."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("data/model", "metrics/curve_train.csv"):  # what the two nodes must write again
        path = repo.path / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    torchrun = str(VENV_BIN / "torchrun")
    cmd = [torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "mlmpipe-test", "stages/pretrain.py"]
    nodes = [subprocess.Popen(cmd, cwd=repo.path, env=repo.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert repo.read_json("metrics/details/train.json")["processes"] == 2
    return curve(repo)


def weights(repo) -> dict:
    from safetensors.torch import load_file

    return load_file(repo.path / "data" / "model" / "model.safetensors")


def _pretrain_processes(root):
    """Every process of the repo at ``root`` running the pretrain stage: a launcher and its workers."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmd, cwd = proc.info["cmdline"] or [], proc.info["cwd"] or ""
        if any("stages/pretrain.py" in c for c in cmd) and cwd == str(root):
            found.append(proc)
    return found


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_killed_and_resumed_end_as_uninterrupted(tmp_path, upstream, fsdp):
    """2 processes (torchrun, gloo; DDP, or FSDP with sharded weights and optimizer state) SIGKILLed mid-run,
    launcher and workers at once, then `dvc repro`: it resumes from the last checkpoint and ends with the
    uninterrupted 2-process run's weights, bit for bit."""
    import signal
    import subprocess
    import time

    params = tiny_params(pretrain={"launcher": "torchrun --standalone --nproc_per_node 2", "max_steps": 60,
                                   "batch_size": 8, "log_every": 5, "eval_every": 30, "checkpoint_every": 5,
                                   "mixed_precision": "no", "fsdp": fsdp})
    ref = upstream.copy(tmp_path / "ref", params)
    out = ok(ref.repro("pretrain"), "dvc repro pretrain (uninterrupted)")  # (evaluate and fill-mask add nothing)
    assert stages_run(out) == ["pretrain"], out  # the copied stages before it are up to date
    repo = upstream.copy(tmp_path / "killed", params)
    run = subprocess.Popen([str(VENV_BIN / "dvc"), "repro", "pretrain"], cwd=repo.path,
                           env=repo.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while not list((repo.path / "data" / "checkpoints").glob("*/step-0000015")):
            assert run.poll() is None and time.time() < deadline, "no checkpoint at step 15 before the run ended"
            time.sleep(0.05)
        procs = _pretrain_processes(repo.path)
        assert len(procs) >= 3, procs  # torchrun and its two workers
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        assert run.wait(timeout=120) != 0
    finally:
        if run.poll() is None:
            run.kill()
    assert not (repo.path / "data" / "model").exists()
    rc, out, err = repo.repro("pretrain")
    assert rc == 0 and "resuming from data/checkpoints/" in err, err[-3000:]
    assert repo.read_json("metrics/details/train.json")["resumed_from_step"] >= 15
    assert (repo.path / "data/model/model.safetensors").read_bytes() == \
        (ref.path / "data/model/model.safetensors").read_bytes()
    assert curve(repo) == curve(ref)
