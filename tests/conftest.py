"""Shared fixtures for the unit tests: a small natural-looking corpus, real tokenizers trained
in-process on it (byte-level BPE and WordPiece), and tiny parameter sections.

Everything here is real (tokenizers, transformers, datasets, torch); only the sizes are tiny, so
the whole unit suite runs in well under two minutes on two CPU cores.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # the package is installed editable; this only helps a bare checkout
    sys.path.insert(0, str(ROOT / "src"))

# Keep the tests light on a shared two-core machine, and never reach the network.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(1)

from mlmpipe import families  # noqa: E402
from mlmpipe import params as P  # noqa: E402
from mlmpipe import tokenizer as T  # noqa: E402

from corpora import make_docs  # noqa: E402  (the one text generator)


@pytest.fixture(scope="session")
def docs() -> list[str]:
    """300 training documents (a few sentences each)."""
    return make_docs(300, seed=0)


@pytest.fixture(scope="session")
def val_docs() -> list[str]:
    return make_docs(30, seed=1)


def _train_and_save(docs, kind, root: Path, vocab_size: int = 600, lowercase: bool = False):
    tok = T.train(iter(docs), kind, vocab_size=vocab_size, min_frequency=2, lowercase=lowercase,
                  model_max_length=128)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def bpe_dir(docs, tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer trained on ``docs`` and saved in Hugging Face format."""
    return _train_and_save(docs, "bpe", tmp_path_factory.mktemp("bpe_tok"))


@pytest.fixture(scope="session")
def wp_dir(docs, tmp_path_factory) -> Path:
    """A WordPiece tokenizer trained on ``docs`` and saved in Hugging Face format."""
    return _train_and_save(docs, "wordpiece", tmp_path_factory.mktemp("wp_tok"))


@pytest.fixture(scope="session")
def bpe_tok(bpe_dir):
    return T.load(str(bpe_dir))


@pytest.fixture(scope="session")
def wp_tok(wp_dir):
    return T.load(str(wp_dir))


@pytest.fixture(scope="session")
def toks(bpe_tok, wp_tok) -> dict:
    return {"bpe": bpe_tok, "wordpiece": wp_tok}


FAMILIES = families.NAMES
FAMILY_KIND = {name: families.FAMILIES[name].kinds[0] for name in FAMILIES}  # the usual tokenizer of each


def tiny_model_params(family: str = "roberta", **kw) -> P.Model:
    """A 2-layer, hidden-32 model section."""
    raw = dict(family=family, layers=2, hidden=32, heads=2, intermediate=64, dropout=0.0)
    raw.update(kw)
    return P.parse(P.Model, "model", raw)


def tiny_pretrain_params(**kw) -> P.Pretrain:
    """A short, fp32, deterministic pretrain section."""
    raw = dict(lr=0.005, schedule="linear", warmup_steps=2, max_steps=20, batch_size=8, grad_accum=1,
               mixed_precision="no", mlm_probability=0.15, log_every=5, eval_every=1000, eval_blocks=4,
               checkpoint_every=1000, keep_checkpoints=2, num_threads=1, clip_norm=1.0, random_offsets=False)
    raw.update(kw)
    return P.parse(P.Pretrain, "pretrain", raw)


@pytest.fixture
def model_section() -> P.Model:
    """The tiny model section (RoBERTa); tests needing another family call ``tiny_model_params``."""
    return tiny_model_params()


@pytest.fixture
def pretrain_section() -> P.Pretrain:
    return tiny_pretrain_params()
