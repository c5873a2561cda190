"""Saved tokenizers and model folders load in transformers 4.x as well as 5.x.

transformers 5 names a bare tokenizer.json's class "TokenizersBackend", which 4.x does not have;
``tokenizer.save`` writes "PreTrainedTokenizerFast" (and the model's input names). The slow test
installs the last 4.x release (tests/constraints-transformers4.txt, with --no-deps: torch and the rest
come from this venv) once into a cache folder, and compares what 4.x and 5.x make of the same folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mlmpipe import model as M
from mlmpipe import tokenizer as T

from conftest import tiny_model_params
from corpora import make_docs

CONSTRAINTS = Path(__file__).with_name("constraints-transformers4.txt")
BLOCK = 32
CASES = (("roberta", "bpe"), ("modernbert", "bpe"), ("bert", "wordpiece"), ("distilbert", "wordpiece"))
MASK = {"bpe": "<mask>", "wordpiece": "[MASK]"}
PROMPT = 'The "{}" statement terminates the nearest enclosing loop.'

# What a transformers version makes of a saved folder; run in this process (5.x) and in a subprocess (4.x).
PROBE = r'''
import json, sys

import torch
from transformers import AutoTokenizer, pipeline


def describe(path, texts, pair, prompt, model):
    tok = AutoTokenizer.from_pretrained(path)
    enc = lambda *a, **kw: {k: list(v) for k, v in tok(*a, **kw).items()}  # noqa: E731
    out = {"class": type(tok).__name__, "is_fast": tok.is_fast, "input_names": list(tok.model_input_names),
           "specials": {k: str(v) for k, v in tok.special_tokens_map.items()},
           "special_ids": sorted(tok.all_special_ids), "mask_id": tok.mask_token_id, "pad_id": tok.pad_token_id,
           "vocab": len(tok), "max_length": tok.model_max_length,
           "single": [enc(t) for t in texts], "pair": enc(*pair), "batch": enc(texts, padding=True),
           "tokens": [tok.convert_ids_to_tokens(tok(t)["input_ids"]) for t in texts],
           "decoded": [tok.decode(tok(t)["input_ids"], skip_special_tokens=True) for t in texts]}
    if model:
        fill = pipeline("fill-mask", model=path, device="cpu", top_k=5)
        out["fill"] = [{"token": p["token"], "token_str": p["token_str"], "score": p["score"]} for p in fill(prompt)]
    return out


if __name__ == "__main__":
    import tokenizers, transformers

    torch.set_num_threads(1)
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    result = {"versions": [transformers.__version__, tokenizers.__version__],
              "folders": {name: describe(**case) for name, case in spec.items()}}
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(result, fh)
'''


def texts_for(kind: str) -> list[str]:
    return [PROMPT.format(MASK[kind]), "The Loop RETURNS a value, café.", "the  break   statement\tends it",
            f"A {MASK[kind]} returns a value."]


def save_like_train_tokenizer(docs, kind: str, root: Path) -> Path:
    """What stages/train_tokenizer.py writes."""
    tok = T.train(iter(docs), kind, vocab_size=400, min_frequency=2, lowercase=False, model_max_length=128)
    T.save(tok, root)
    return root


def save_like_pretrain(tok_dir: Path, family: str, root: Path) -> Path:
    """What stages/pretrain.py writes (a scratch model stands in for a trained one)."""
    tok = T.load(str(tok_dir))
    model = M.build_scratch(tiny_model_params(family), tok, BLOCK, seed=0)
    tok.model_max_length = BLOCK
    tok.model_input_names = M.input_names(model)
    model.save_pretrained(root, safe_serialization=True)
    T.save(tok, root)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """{name: describe() arguments} for two tokenizer folders and one model folder per family."""
    docs = make_docs(300, seed=0)
    root = tmp_path_factory.mktemp("compat")
    out = {}
    for kind in MASK:
        d = save_like_train_tokenizer(docs, kind, root / f"tokenizer-{kind}")
        out[f"tokenizer-{kind}"] = dict(path=str(d), texts=texts_for(kind), pair=["the loop", "a value"],
                                        prompt=PROMPT.format(MASK[kind]), model=False)
    for family, kind in CASES:
        d = save_like_pretrain(root / f"tokenizer-{kind}", family, root / f"model-{family}")
        out[f"model-{family}"] = dict(out[f"tokenizer-{kind}"], path=str(d), model=True)
    return out


def _describe_here(case: dict) -> dict:
    namespace: dict = {}
    exec(compile(PROBE, "probe", "exec"), namespace)
    return json.loads(json.dumps(namespace["describe"](**case)))  # tuples -> lists, as from the subprocess


@pytest.mark.parametrize("kind", list(MASK))
def test_saved_config_names_a_class_both_versions_know(tmp_path, kind):
    tok = T.train(iter(make_docs(100)), kind, vocab_size=300, min_frequency=2, lowercase=False, model_max_length=64)
    tok.model_input_names = ["input_ids", "attention_mask"]
    T.save(tok, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["model_input_names"] == ["input_ids", "attention_mask"]
    back = AutoTokenizer.from_pretrained(str(tmp_path))  # 5.x: still a fast tokenizer, encoding as before
    assert back.is_fast and back.special_tokens_map == tok.special_tokens_map
    assert back.model_input_names == ["input_ids", "attention_mask"]
    for text in texts_for(kind):
        assert back(text) == tok(text)
    assert back("the loop", "a value") == tok("the loop", "a value")


def test_save_is_deterministic(tmp_path):
    docs = make_docs(100)
    for run in ("a", "b"):
        tok = T.train(iter(docs), "bpe", vocab_size=300, min_frequency=2, lowercase=False, model_max_length=64)
        T.save(tok, tmp_path / run)
        T.save(T.load(str(tmp_path / run)), tmp_path / f"{run}-resaved")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["tokenizer.json", "tokenizer_config.json"]
    for other in ("b", "a-resaved", "b-resaved"):
        assert sorted(p.name for p in (tmp_path / other).iterdir()) == names
        for name in names:
            assert (tmp_path / other / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), (other, name)


def _pins() -> dict[str, str]:
    lines = (ln.split("#")[0].strip() for ln in CONSTRAINTS.read_text(encoding="utf-8").splitlines())
    return dict(ln.split("==") for ln in lines if ln)


@pytest.fixture(scope="session")
def transformers4() -> Path:
    """A folder holding the pinned transformers 4.x, tokenizers and huggingface_hub (pip --target, --no-deps),
    cached across runs under ~/.cache/mlmpipe (or $XDG_CACHE_HOME/mlmpipe) and keyed by the pins and Python."""
    from filelock import FileLock

    key = hashlib.sha256(CONSTRAINTS.read_bytes() + f"{sys.version_info[:2]} {platform.machine()}".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlmpipe"
    target = cache / f"transformers4-py{sys.version_info[0]}{sys.version_info[1]}-{key.hexdigest()[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / ".complete").exists():
            tmp = cache / f".{target.name}.tmp-{os.getpid()}"
            for stale in (tmp, target):
                shutil.rmtree(stale, ignore_errors=True)
            cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-q", "--no-deps",
                   "--only-binary", ":all:", "--target", str(tmp), "-c", str(CONSTRAINTS), *_pins()]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if done.returncode:
                pytest.fail(f"pip could not install {CONSTRAINTS.name} into {tmp}:\n{done.stderr[-3000:]}")
            (tmp / ".complete").write_text(CONSTRAINTS.read_text(encoding="utf-8"), encoding="utf-8")
            os.replace(tmp, target)
    return target


def _describe_in_transformers4(path: Path, folders: dict, work: Path) -> dict:
    (work / "spec.json").write_text(json.dumps(folders), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONNOUSERSITE="1")
    done = subprocess.run([sys.executable, "-c", PROBE, str(work / "spec.json"), str(work / "out.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        pytest.fail(f"transformers 4.x could not load a saved folder:\n{done.stderr[-3000:]}", pytrace=False)
    return json.loads((work / "out.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_transformers4_loads_saved_tokenizers_and_models(transformers4, folders, tmp_path):
    old = _describe_in_transformers4(transformers4, folders, tmp_path)
    pins = _pins()
    assert old["versions"] == [pins["transformers"], pins["tokenizers"]]  # really 4.x, not this venv's 5.x
    for name, case in folders.items():
        got, want = old["folders"][name], _describe_here(case)
        assert got["class"] == "PreTrainedTokenizerFast" and got["is_fast"], name
        got_fill, want_fill = got.pop("fill", None), want.pop("fill", None)
        want["class"] = got["class"]  # 5.x calls the same class TokenizersBackend
        assert got == want, name  # special tokens, input names, encodings (single, pair, padded batch), decoding
        if case["model"]:  # the same weights: the same top 5, with the same scores
            assert [p["token"] for p in got_fill] == [p["token"] for p in want_fill], name
            assert [p["token_str"] for p in got_fill] == [p["token_str"] for p in want_fill], name
            assert [p["score"] for p in got_fill] == pytest.approx([p["score"] for p in want_fill], rel=1e-4), name
