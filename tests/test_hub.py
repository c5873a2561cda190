"""Hub ids for build_model.checkpoint and train_tokenizer.from (``mlmpipe.hub``): the local Hugging Face cache
first, with no network at all; what is not cached fails in one line at once when the Hub cannot be reached.

The cache is made here, in the layout huggingface_hub reads (``models--owner--name/refs/main`` and
``snapshots/<commit>/``), so nothing is downloaded. Each check runs in a subprocess, because
huggingface_hub reads HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE when it is imported; the endpoint is
a 127.0.0.1 port that nothing listens on.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_repo import PROJECT, venv_env

CACHED = "mlmpipe-tests/cached-bert"  # config, weights and tokenizer in the cache
CONFIG_ONLY = "mlmpipe-tests/config-only"  # only config.json in the cache (e.g. an earlier AutoConfig load)
COMMIT = "0123456789abcdef0123456789abcdef01234567"

_SNIPPET = """
import sys, time
from mlmpipe import model, tokenizer
from mlmpipe.params import MlmpipeError
what, name, local_tokenizer = sys.argv[1:]
local = tokenizer.load(local_tokenizer)
start = time.monotonic()
try:
    if what == "model":
        m = model.load_pretrained(name, "bert", local, 16, False, False)
        print("loaded", type(m).__name__, m.get_input_embeddings().num_embeddings, len(local))
    else:
        tok = tokenizer.load(name)
        print("loaded", type(tok).__name__, len(tok), tok.mask_token)
except MlmpipeError as e:
    print("error", e)
print(f"{time.monotonic() - start:.3f}")
"""


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _put_in_cache(hub_cache: Path, repo_id: str, files: list[Path]) -> None:
    d = hub_cache / ("models--" + repo_id.replace("/", "--"))
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(COMMIT)
    snap = d / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, snap / f.name)


@pytest.fixture(scope="module")
def hf_home(wp_dir, wp_tok, tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    home = tmp_path_factory.mktemp("hf_home")
    saved = home.parent / "saved_bert"
    BertForMaskedLM(BertConfig(vocab_size=len(wp_tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=16)).save_pretrained(
        saved, safe_serialization=True)
    tok_files = [f for f in wp_dir.iterdir() if f.suffix == ".json"]
    _put_in_cache(home / "hub", CACHED, [saved / "config.json", saved / "model.safetensors", *tok_files])
    _put_in_cache(home / "hub", CONFIG_ONLY, [saved / "config.json"])
    return home


def _run(hf_home: Path, what: str, name: str, offline: bool, wp_dir: Path) -> tuple[str, float, str]:
    flag = "1" if offline else "0"
    env = venv_env({"HF_HOME": str(hf_home), "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
                    "HF_HUB_OFFLINE": flag, "HF_DATASETS_OFFLINE": flag, "TRANSFORMERS_OFFLINE": flag},
                   src=PROJECT / "src")
    proc = subprocess.run([sys.executable, "-c", _SNIPPET, what, name, str(wp_dir)], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result, seconds = proc.stdout.strip().splitlines()[-2:]
    return result, float(seconds), proc.stderr


@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "offline"])
@pytest.mark.parametrize("what", ["model", "tokenizer"])
def test_cached_hub_id_loads_without_the_network(hf_home, wp_dir, wp_tok, what, offline):
    result, seconds, err = _run(hf_home, what, CACHED, offline, wp_dir)
    assert result.startswith("loaded"), result
    if what == "model":
        assert result == f"loaded BertForMaskedLM {len(wp_tok)} {len(wp_tok)}"
    else:
        assert result.endswith(f" {len(wp_tok)} [MASK]"), result
    assert seconds < 10 and "Retry" not in err, (seconds, err[-3000:])


@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "offline"])
@pytest.mark.parametrize("what", ["model", "tokenizer"])
def test_partly_cached_hub_id_fails_fast(hf_home, wp_dir, what, offline):
    """Only config.json is cached: the weights and the tokenizer are missing, so it is the one line, at once;
    not a tokenizer made up from the config alone (transformers returns a 5-token one from the cache)."""
    result, seconds, err = _run(hf_home, what, CONFIG_ONLY, offline, wp_dir)
    named = f"build_model.checkpoint = '{CONFIG_ONLY}'" if what == "model" else repr(CONFIG_ONLY)
    assert result.startswith(f"error {named}: not a local directory"), result
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot be reached (Connection refused)") in result
    assert f"hf download {CONFIG_ONLY}" in result
    assert seconds < 10 and "Retry" not in err, (seconds, err[-3000:])


def test_local_directory_is_not_a_hub_id(tmp_path):
    from mlmpipe import hub

    assert not hub.is_hub_id(str(tmp_path))  # exists
    assert hub.resolve(str(tmp_path), "build_model.checkpoint", ("config.json",)) == {}
    assert not hub.is_hub_id(str(tmp_path / "missing" / "dir"))  # cannot be a Hub id: the loader reports it
    assert hub.is_hub_id("owner/name") and hub.is_hub_id("bert-base-uncased")


def test_unreachable_names_the_reason():
    from mlmpipe import hub

    assert hub.unreachable(f"http://127.0.0.1:{_closed_port()}") == "Connection refused"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert hub.unreachable(f"http://127.0.0.1:{s.getsockname()[1]}") is None
