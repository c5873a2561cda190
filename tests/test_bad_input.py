"""Bad inputs: every stage refuses them with ONE line `error: ...` and leaves no half-written output.

One table: each case edits params.yaml (or writes a bad file) in a shared tiny repo whose earlier
stages have already run, runs one stage script directly (`python stages/<name>.py`), and checks:
a non-zero exit; stderr's last non-empty line starts with `error:` and names the parameter or
file and the bad value; no Python traceback; data/ and metrics/ exactly as before (same files,
same bytes, no leftover temporary directories). params.yaml is restored after every case.
A case may first make a bad file (a truncated checkpoint) or run its stage under a file-size limit
(`ulimit -f`: a write fails as on a full disk).

The repo is a BERT + WordPiece variant, so the pretrained-checkpoint cases can use tiny BERT
checkpoints made here (max_position_embeddings 16; a vocabulary unlike the tokenizer's).
"""
from __future__ import annotations

import functools
import http.server
import socket
import threading
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pytest

from corpora import corpus_text
from pipeline_repo import VENV_BIN, PipelineRepo, last_line, make_repo, tiny_params

# Stages run directly, in order, to give the cases their inputs (pretrain with few steps).
SETUP_STAGES = ("fetch_corpus", "train_tokenizer", "tokenize_group", "build_model", "pretrain")
WATCHED = ("data", "metrics")  # everything a stage may write


class Case(NamedTuple):
    stage: str
    changes: dict | Callable[["Ctx"], dict] | None  # dotted params changes (or a function of the context)
    expect: tuple  # substrings of the error line (str, or a function of the context)
    raw_params: str | None = None  # write this text as params.yaml instead of changes
    env: dict | Callable[["Ctx"], dict] | None = None  # extra environment (or a function of the context)
    prepare: Callable[["Ctx"], Callable[[], None]] | None = None  # makes a bad file; returns its cleanup
    file_size_kb: int | None = None  # `ulimit -f`: writing a larger file fails as on a full disk


class Ctx(NamedTuple):
    repo: PipelineRepo  # bad files are in its folder bad/
    ckpt_pos16: str  # a BERT checkpoint with the tokenizer's vocabulary and 16 positions
    ckpt_vocab: str  # a BERT checkpoint whose vocabulary is 37 larger than the tokenizer's
    vocab: int  # the tokenizer's vocabulary size
    small_corpus: str  # a corpus directory with splits shorter than one block
    closed_url: str  # nothing listens on its port
    served_url: str  # served by a local HTTP server


NON_UTF8_OFFSET = 123


def _free_closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connecting is refused
    return port


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _write_bad_files(bad: Path) -> None:
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(b"text at first\n" + bytes(range(256)) * 4)
    good = b"A perfectly ordinary sentence that is long enough to keep.\n" * 4
    assert len(good) > NON_UTF8_OFFSET + 1
    (bad / "latin1.txt").write_bytes(good[:NON_UTF8_OFFSET] + b"\xe9" + good[NON_UTF8_OFFSET + 1:])
    (bad / "served").mkdir()
    (bad / "served" / "corpus.txt").write_text(corpus_text("everyday"), encoding="utf-8")


def _make_checkpoints(repo: PipelineRepo, vocab: int) -> tuple[str, str]:
    from transformers import BertConfig, BertForMaskedLM

    dims = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    out = []
    for name, v, pos in (("ckpt_pos16", vocab, 16), ("ckpt_vocab", vocab + 37, 64)):
        d = repo.path / "checkpoints" / name
        BertForMaskedLM(BertConfig(vocab_size=v, max_position_embeddings=pos, **dims)).save_pretrained(
            d, safe_serialization=True)
        out.append(str(d.relative_to(repo.path)))
    return out[0], out[1]


def _small_corpus(repo: PipelineRepo) -> str:
    """A corpus directory whose splits are each shorter than one block (block_size 32)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = repo.path / "small_corpus"
    d.mkdir()
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": pa.array(["Too short to fill a block."], type=pa.large_string())}),
                       d / f"{split}.parquet")
    return "small_corpus"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    repo = make_repo(root / "repo", tiny_params(family="bert", pretrain={"max_steps": 2}), commit=False)
    for stage in SETUP_STAGES:
        rc, out, err = repo.stage(stage)
        assert rc == 0, f"setup stage {stage} failed:\n{err[-3000:]}"
    _write_bad_files(repo.path / "bad")
    vocab = repo.read_json("metrics/details/tokenizer.json")["vocab_size"]
    pos16, wrong_vocab = _make_checkpoints(repo, vocab)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(repo.path / "bad" / "served")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Ctx(repo, pos16, wrong_vocab, vocab, _small_corpus(repo),
                  f"http://127.0.0.1:{_free_closed_port()}/corpus.txt",
                  f"http://127.0.0.1:{server.server_address[1]}/corpus.txt")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


WRONG_SHA = "0" * 64


def _truncated_checkpoint(c: "Ctx") -> Callable[[], None]:
    """A checkpoint that pretrain would resume (it matches the params, initial weights and data), with
    its weights file cut in half, as a crash during a copy or a full disk would leave it."""
    import shutil

    from mlmpipe import checkpoints, grouping
    from mlmpipe.compute import make_optimizer
    from mlmpipe import params as P
    from mlmpipe.model import load

    repo = c.repo
    paths, p = P.section(repo.params(), "paths"), P.section(repo.params(), "pretrain")
    init = str(repo.path / paths.model_init)
    fp = checkpoints.fingerprint(p, init, grouping.load_blocks(repo.path / paths.tokenized / "train"))
    model = load(init)
    ckpt = checkpoints.Checkpoints(checkpoints.run_dir(str(repo.path / paths.checkpoints), fp, environ={}), fp, 2)
    d = ckpt.save(1, model, make_optimizer(model, p, "cpu"))
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return lambda: shutil.rmtree(repo.path / paths.checkpoints, ignore_errors=True)


# --- issue 17: corrupt weights and tokenizer files, Hub ids that cannot be reached, empty splits ---------------
HUB_MODEL = "mlmpipe-tests/no-such-model"
HUB_DATASET = "mlmpipe-tests/no-such-dataset"


def _hub_env(c: "Ctx", offline: bool) -> dict:
    """An empty Hugging Face cache and, unless ``offline``, online mode with an endpoint nothing listens on."""
    flag = "1" if offline else "0"
    return {"HF_HOME": str(c.repo.path.parent / "hf_home_empty"), "HF_ENDPOINT": c.closed_url.rsplit("/", 1)[0],
            "HF_HUB_OFFLINE": flag, "HF_DATASETS_OFFLINE": flag, "TRANSFORMERS_OFFLINE": flag}


def _cut(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _bad_copy(src: Callable[["Ctx"], str], name: str, spoil: Callable[[Path], None]) -> Callable:
    """A ``prepare``: copy directory ``src`` to bad/``name`` and ``spoil`` the copy; the cleanup deletes it."""
    def prepare(c: "Ctx") -> Callable[[], None]:
        import shutil

        d = c.repo.path / "bad" / name
        shutil.copytree(c.repo.path / src(c), d)
        spoil(d)
        return lambda: shutil.rmtree(d)
    return prepare


def _pickle_only(d: Path) -> None:
    """Replace the safetensors weights by the same weights as PyTorch's pickle file."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()


def _truncated_model_init(c: "Ctx") -> Callable[[], None]:
    f = c.repo.path / "data" / "model_init" / "model.safetensors"
    good = f.read_bytes()
    _cut(f)
    return lambda: f.write_bytes(good)


def _text_file(name: str, docs: list[str]) -> Callable:
    """A ``prepare``: bad/``name`` with ``docs`` as paragraphs; the cleanup deletes it."""
    def prepare(c: "Ctx") -> Callable[[], None]:
        f = c.repo.path / "bad" / name
        f.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        return f.unlink
    return prepare


ONE_DOC = ["A single document that is long enough to keep after cleaning."]  # seed 42: validation at 0.99
THREE_DOCS = [f"Document number {i} is long enough to be kept after cleaning." for i in range(3)]  # all validation


CASES = {
    "unknown_param_key": Case("train_tokenizer", {"train_tokenizer.vocab": 100},
                              ("train_tokenizer.vocab", "unknown key")),
    "wrong_type_lr": Case("pretrain", {"pretrain.lr": "fast"}, ("pretrain.lr = 'fast'", "a number")),
    "zero_hidden": Case("build_model", {"model.hidden": 0}, ("model.hidden = 0", ">= 8")),
    "negative_batch_size": Case("pretrain", {"pretrain.batch_size": -1}, ("pretrain.batch_size = -1", ">= 1")),
    "mlm_probability_zero": Case("pretrain", {"pretrain.mlm_probability": 0}, ("pretrain.mlm_probability = 0", "> 0")),
    "mlm_probability_above_one": Case("pretrain", {"pretrain.mlm_probability": 1.5},
                                      ("pretrain.mlm_probability = 1.5", "< 1")),
    "hidden_not_divisible_by_heads": Case("build_model", {"model.hidden": 30, "model.heads": 4},
                                          ("model.hidden = 30", "model.heads = 4", "divisible")),
    "block_size_exceeds_checkpoint_positions": Case(
        "build_model", lambda c: {"build_model.init": "pretrained", "build_model.checkpoint": c.ckpt_pos16},
        ("tokenize_group.block_size = 32", "position embeddings", "16")),
    "tokenizer_family_mismatch": Case("build_model", {"model.family": "roberta"},
                                      ("train_tokenizer.kind = 'wordpiece'", "model.family = 'roberta'")),
    "vocabulary_mismatch": Case(
        "build_model", lambda c: {"build_model.init": "pretrained", "build_model.checkpoint": c.ckpt_vocab},
        (lambda c: c.ckpt_vocab, lambda c: f"vocabulary of {c.vocab + 37}", lambda c: f"tokenizer has {c.vocab}")),
    "scratch_with_checkpoint": Case(
        "build_model", lambda c: {"build_model.checkpoint": c.ckpt_pos16},
        ("build_model.checkpoint", lambda c: c.ckpt_pos16, "init: scratch")),
    "missing_corpus_file": Case("fetch_corpus", {"fetch_corpus.source": "data/raw/no-such-file.txt"},
                                ("fetch_corpus.source", "data/raw/no-such-file.txt", "no such file")),
    "missing_train_extra_file": Case(
        "fetch_corpus", {"fetch_corpus.train_extra": ["builtin:python-docstrings", "data/raw/no-such-file.txt"]},
        ("fetch_corpus.train_extra[1]", "data/raw/no-such-file.txt", "no such file")),
    "empty_corpus_file": Case("fetch_corpus", {"fetch_corpus.source": "bad/empty.txt"},
                              ("bad/empty.txt", "empty")),
    "binary_corpus_file": Case("fetch_corpus", {"fetch_corpus.source": "bad/binary.txt"},
                               ("bad/binary.txt", "binary", "byte offset 14")),
    "non_utf8_corpus_file": Case("fetch_corpus", {"fetch_corpus.source": "bad/latin1.txt"},
                                 ("bad/latin1.txt", "UTF-8", f"byte offset {NON_UTF8_OFFSET}")),
    "corpus_smaller_than_one_block": Case(
        "tokenize_group", lambda c: {"paths.corpus": c.small_corpus},
        (lambda c: f"{c.small_corpus}/train.parquet", "fewer tokens than one block",
         "tokenize_group.block_size = 32")),
    "url_connection_refused": Case("fetch_corpus", lambda c: {"fetch_corpus.source": c.closed_url},
                                   (lambda c: c.closed_url, "fetch_corpus.source", "download failed")),
    "url_sha256_mismatch": Case(
        "fetch_corpus", lambda c: {"fetch_corpus.source": c.served_url, "fetch_corpus.sha256": WRONG_SHA},
        ("fetch_corpus.sha256", "checksum mismatch", WRONG_SHA, lambda c: c.served_url)),
    "hub_dataset_missing": Case("fetch_corpus", {"fetch_corpus.source": "hf:mlmpipe-tests/no-such-dataset"},
                                ("fetch_corpus.source", "hf:mlmpipe-tests/no-such-dataset"),
                                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}),
    "fill_mask_prompt_too_long": Case(
        "fill_mask_report",
        {"fill_mask_report.prompts": [{"text": "The baker sold <mask> warm coat. " + "A quiet student " * 20}]},
        ("fill_mask_report.prompts[0].text", "positions")),
    "next_sentence_with_modernbert": Case("build_model", {"model.family": "modernbert", "model.next_sentence": True},
                                          ("model.next_sentence = true", "model.family = 'modernbert'", "bert")),
    "next_sentence_without_pairs": Case("build_model", {"model.next_sentence": True},
                                        ("model.next_sentence = true", "tokenize_group.mode = 'group'",
                                         "sentence_pairs")),
    "truncated_checkpoint_on_resume": Case(
        "pretrain", {}, ("data/checkpoints/", "/step-0000001", "corrupt or truncated", "delete it"),
        prepare=_truncated_checkpoint),
    "disk_full_while_saving_model": Case("pretrain", {}, ("data/model", "disk is full", "file too large"),
                                         file_size_kb=64),
    "params_not_yaml": Case("train_tokenizer", None, ("params.yaml", "not valid YAML", "line 3"),
                            raw_params="seed: 42\npaths: {corpus: data/corpus\nmodel: [1, 2\n"),
    "unknown_top_level_section": Case("fetch_corpus", {"pretraining": {"lr": 0.1}},
                                      ("params.yaml", "unknown section", "'pretraining'")),
    # --- issue 17 (keep these rows together) ---
    "checkpoint_weights_truncated": Case(
        "build_model", {"build_model.init": "pretrained", "build_model.checkpoint": "bad/ckpt_truncated"},
        ("build_model.checkpoint = 'bad/ckpt_truncated'", "bad/ckpt_truncated/model.safetensors",
         "corrupt or truncated", "re-download it"),
        prepare=_bad_copy(lambda c: c.ckpt_pos16, "ckpt_truncated", lambda d: _cut(d / "model.safetensors"))),
    "checkpoint_pickle_weights_only": Case(
        "build_model", {"build_model.init": "pretrained", "build_model.checkpoint": "bad/ckpt_pickle"},
        ("build_model.checkpoint = 'bad/ckpt_pickle'", "pytorch_model.bin", "from_pretrained",
         "save_pretrained(dir, safe_serialization=True)"),
        prepare=_bad_copy(lambda c: c.ckpt_pos16, "ckpt_pickle", _pickle_only)),
    "model_init_weights_truncated": Case(
        "pretrain", {}, ("data/model_init/model.safetensors", "corrupt or truncated", "dvc"),
        prepare=_truncated_model_init),
    "tokenizer_json_truncated": Case(
        "train_tokenizer", {"train_tokenizer.from": "bad/tok_truncated"},
        ("train_tokenizer.from = 'bad/tok_truncated'", "bad/tok_truncated/tokenizer.json", "corrupt or truncated",
         "re-download it"),
        prepare=_bad_copy(lambda c: "data/tokenizer", "tok_truncated", lambda d: _cut(d / "tokenizer.json"))),
    "hub_checkpoint_unreachable": Case(
        "build_model", {"build_model.init": "pretrained", "build_model.checkpoint": HUB_MODEL},
        (f"build_model.checkpoint = '{HUB_MODEL}'", "cannot be reached", f"hf download {HUB_MODEL}",
         "local directory"),
        env=lambda c: _hub_env(c, offline=False)),
    "hub_checkpoint_offline": Case(
        "build_model", {"build_model.init": "pretrained", "build_model.checkpoint": HUB_MODEL},
        (f"build_model.checkpoint = '{HUB_MODEL}'", "HF_HUB_OFFLINE is set", f"hf download {HUB_MODEL}"),
        env=lambda c: _hub_env(c, offline=True)),
    "hub_tokenizer_unreachable": Case(
        "train_tokenizer", {"train_tokenizer.from": HUB_MODEL},
        (f"train_tokenizer.from = '{HUB_MODEL}'", "cannot be reached", f"hf download {HUB_MODEL}"),
        env=lambda c: _hub_env(c, offline=False)),
    "hub_tokenizer_offline": Case(
        "train_tokenizer", {"train_tokenizer.from": HUB_MODEL},
        (f"train_tokenizer.from = '{HUB_MODEL}'", "HF_HUB_OFFLINE is set", f"hf download {HUB_MODEL}"),
        env=lambda c: _hub_env(c, offline=True)),
    "hub_dataset_unreachable": Case(
        "fetch_corpus", {"fetch_corpus.source": f"hf:{HUB_DATASET}"},
        (f"fetch_corpus.source = 'hf:{HUB_DATASET}'", "cannot be reached",
         f"hf download {HUB_DATASET} --repo-type dataset"),
        env=lambda c: _hub_env(c, offline=False)),
    "hub_dataset_offline": Case(
        "fetch_corpus", {"fetch_corpus.source": f"hf:{HUB_DATASET}"},
        (f"fetch_corpus.source = 'hf:{HUB_DATASET}'", "offline", f"hf download {HUB_DATASET} --repo-type dataset"),
        env=lambda c: _hub_env(c, offline=True)),
    "one_document_goes_to_validation": Case(
        "fetch_corpus", {"fetch_corpus.source": "bad/one_doc.txt", "fetch_corpus.validation_fraction": 0.99},
        ("training split is empty", "1 document", "validation_fraction = 0.99", "at least 2 documents",
         "validation_source"),
        prepare=_text_file("one_doc.txt", ONE_DOC)),
    "one_document_goes_to_training": Case(
        "fetch_corpus", {"fetch_corpus.source": "bad/one_doc.txt"},
        ("validation split is empty", "1 document", "at least 2 documents", "validation_source"),
        prepare=_text_file("one_doc.txt", ONE_DOC)),
    "all_documents_go_to_validation": Case(
        "fetch_corpus", {"fetch_corpus.source": "bad/three_docs.txt", "fetch_corpus.validation_fraction": 0.99},
        ("training split is empty", "all 3 documents", "validation_fraction = 0.99", "lower"),
        prepare=_text_file("three_docs.txt", THREE_DOCS)),
    "no_document_after_cleaning": Case(
        "fetch_corpus", {"fetch_corpus.min_chars": 100000},
        ("empty after cleaning", "no documents left", "fetch_corpus.min_chars = 100000")),
    "validation_source_empty_after_cleaning": Case(
        "fetch_corpus", {"fetch_corpus.validation_source": "bad/empty.txt"},
        ("fetch_corpus.validation_source = 'bad/empty.txt'", "no documents left")),
    # --- end of issue 17 ---
}


def _state(repo: PipelineRepo) -> dict:
    """Every path (files and directories, hidden ones too) under data/ and metrics/, with file hashes."""
    out = {}
    for top in WATCHED:
        root = repo.path / top
        for p in sorted(root.rglob("*")):
            rel = str(p.relative_to(repo.path))
            if rel.startswith("data/raw"):
                continue
            out[rel] = "dir" if p.is_dir() else repo.tree_hashes(rel)[p.name]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(ctx: Ctx, name: str):
    case = CASES[name]
    repo = ctx.repo
    before_params = repo.params()
    cleanup = case.prepare(ctx) if case.prepare else None
    env = case.env(ctx) if callable(case.env) else case.env
    before = _state(repo)
    try:
        if case.raw_params is not None:
            repo.params_file.write_text(case.raw_params, encoding="utf-8")
        else:
            changes = case.changes(ctx) if callable(case.changes) else case.changes
            repo.set_params(changes)
        if case.file_size_kb is None:
            rc, out, err = repo.stage(case.stage, env=env)
        else:  # bash's ulimit for the stage only; Python ignores SIGXFSZ, so a write fails with EFBIG
            rc, out, err = repo.run("bash", "-c", f"ulimit -f {case.file_size_kb} && exec \"$0\" \"$@\"",
                                    str(VENV_BIN / "python"), f"stages/{case.stage}.py", env=env)
    finally:
        repo.write_params(before_params)
        after = _state(repo)
        if cleanup:
            cleanup()
    line = last_line(err)
    print(f"{name}: {line}")
    detail = f"stage {case.stage}, rc {rc}, stderr tail:\n{err[-4000:]}"
    assert rc != 0, detail
    assert "Traceback (most recent call last)" not in err, detail
    assert line.startswith("error:"), detail
    for want in case.expect:
        want = want(ctx) if callable(want) else want
        assert want in line, f"{want!r} not in the error line {line!r}"
    assert after == before, (f"{case.stage} changed its outputs: added {sorted(set(after) - set(before))}, "
                             f"removed {sorted(set(before) - set(after))}, changed "
                             f"{sorted(k for k in set(after) & set(before) if after[k] != before[k])}")


_TIMED_LOAD = """
import sys, time
from mlmpipe import model, sources, tokenizer
from mlmpipe.params import MlmpipeError
import datasets  # imported before the clock starts, like the rest
what = sys.argv[1]
tok = tokenizer.load("data/tokenizer")
start = time.monotonic()
try:
    if what == "model":
        model.load_pretrained(sys.argv[2], "bert", tok, 32, False, False)
    elif what == "tokenizer":
        tokenizer.load(sys.argv[2])
    else:
        list(sources.read_hub(sys.argv[2], None, "train", None, "text"))
    print("loaded")
except MlmpipeError as e:
    print(f"{time.monotonic() - start:.3f}")
    print(e)
"""


@pytest.mark.parametrize("what,name", [("model", HUB_MODEL), ("tokenizer", HUB_MODEL), ("dataset", HUB_DATASET)])
@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "offline"])
def test_hub_id_fails_fast(ctx: Ctx, what: str, name: str, offline: bool):
    """A Hub id that is not in the cache fails at once when the Hub cannot be reached or HF_HUB_OFFLINE is set:
    huggingface_hub's retries with backoff took 24 s (a dataset) to 54 s (a tokenizer) before the error."""
    rc, out, err = ctx.repo.run(str(VENV_BIN / "python"), "-c", _TIMED_LOAD, what, name,
                                env=_hub_env(ctx, offline=offline))
    assert rc == 0 and out.count("\n") == 2, f"rc {rc}, stdout:\n{out}\nstderr tail:\n{err[-3000:]}"
    seconds, message = out.splitlines()
    print(f"{what} {'offline' if offline else 'unreachable'}: {seconds} s: {message}")
    assert float(seconds) < 10, f"took {seconds} s to fail: {message}"
    assert name in message and "hf download" in message
    assert "Retry" not in err, err[-3000:]
