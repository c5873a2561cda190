"""What the benchmark scripts share: the seed, the machine line, the data (default corpus -> BPE -> blocks,
through the library), the step clock, the benchmark model's config, the matmul peak and FLOPs per token.

Importing it puts this checkout's ``src`` first on ``sys.path`` (mlmpipe without ``pip install -e``).
Functions take values and return values; the scripts print.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

SEED = 42
SOURCE = "builtin:python-docs"


def project_params() -> dict:
    """params.yaml of this checkout, read as the stages (and DVC) read it."""
    from mlmpipe.params import read_params

    return read_params(str(ROOT / "params.yaml"))


def cpu_info() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    isa = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(isa) or 'no AVX'}"


# ----------------------------------------------------------------------------------------------- data

def blocks_file(d: Path, split: str, mode: str = "group") -> Path:
    return d / (f"{split}.npy" if mode == "group" else f"{mode}-{split}.npy")


def load_blocks(d: Path, split: str, mode: str = "group"):
    """``group``: an (N, block) int32 array; other modes: a list of 1-D int32 arrays (one per example)."""
    import numpy as np

    f = blocks_file(d, split, mode)
    return np.load(f) if mode == "group" else list(np.load(f, allow_pickle=True))


def prepare_data(d: Path, vocab: int, block: int, modes: tuple = ("group",)) -> dict:
    """Default corpus -> cleaned split (5 % validation) -> byte-level BPE (``vocab`` requested) -> each of
    ``modes`` (``group``: ``block``-token blocks; ``line_by_line``: one example per document), all through the
    library; the tokenizer in ``d / "tokenizer"``, the splits as ``blocks_file`` .npy files. Cached in ``d``
    (reused when vocab and block match and the files are there); returns the meta record."""
    meta_file = d / "meta.json"
    want = {"vocab_requested": vocab, "block_size": block, "source": SOURCE}
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if all(meta.get(k) == v for k, v in want.items()) and all(
                blocks_file(d, s, m).exists() for m in modes for s in ("train", "validation")):
            return meta
    import datasets
    import numpy as np

    from mlmpipe import corpus, grouping, sources, tokenizer

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    cdir = d / "corpus"
    cdir.mkdir(parents=True, exist_ok=True)
    cstats = corpus.write_corpus(corpus.clean(sources.builtin_python_docs(), 40, True, None), cdir, SEED, 0.05)
    tok = tokenizer.train(corpus.read_split(cdir, "train"), "bpe", vocab, 2, False, 512)
    tok.save_pretrained(str(d / "tokenizer"))
    counts = {}
    for mode in modes:
        for split in ("train", "validation"):
            ds = grouping.tokenize_split(cdir / f"{split}.parquet", tok, mode, block, 1, 1000, d / "scratch")
            data = grouping.load_blocks_from(ds)
            if mode == "group":
                np.save(blocks_file(d, split), np.ascontiguousarray(data, dtype=np.int32))
                counts[f"{split}_blocks"] = int(data.shape[0])
            else:
                np.save(blocks_file(d, split, mode), np.array([np.asarray(x, dtype=np.int32) for x in data],
                                                              dtype=object), allow_pickle=True)
                counts[f"{mode}_{split}_examples"] = len(data)
            del ds, data
        grouping.clear_scratch(d / "scratch")
    meta = {**want, "vocab_size": len(tok), "documents": cstats["documents"], "bytes": cstats["bytes"], **counts,
            "prepare_s": round(time.perf_counter() - t0, 1)}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta


# ---------------------------------------------------------------------------------------------- model

def model_config(tok, block: int, dims, dropout: float | None = None, attn_implementation: str | None = None):
    """The benchmarks' RoBERTa config, for both sides: ``dims`` = (layers, hidden, heads, intermediate), the
    tokenizer's vocabulary and ids, max_position_embeddings = block + 2, type_vocab_size 1 (the library's
    ``model.make_config``, as "How to train a new language model from scratch" writes it). ``dropout`` None:
    RobertaConfig's default (0.1), as the HF recipe has it; our side passes our params default (0.0).
    ``attn_implementation`` None: transformers' default (sdpa)."""
    from transformers import RobertaConfig

    from mlmpipe import model as M
    from mlmpipe import params as P

    layers, hidden, heads, inter = dims
    if dropout is None:
        dropout = RobertaConfig().hidden_dropout_prob
    m = P.Model(family="roberta", layers=layers, hidden=hidden, heads=heads, intermediate=inter, dropout=dropout)
    config = M.make_config(m, tok, block)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    return config


# --------------------------------------------------------------------------------------------- timing

def now(cuda: bool) -> float:
    """``time.perf_counter()`` after the GPU's queued work (``cuda``)."""
    if cuda:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


class StepClock:
    """Records the time after every ``optimizer.step()`` of any optimizer in the process (a global torch hook),
    so every loop is timed the same way without relying on its logging: the interval between two
    consecutive step ends is one whole step (batch, masking or collation, forward, backward, update).
    Subclasses override ``_hook`` to do more at every step end."""

    def __init__(self, cuda: bool = False):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.cuda, self.ends = cuda, []
        self.handle = register_optimizer_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs):
        self.ends.append(now(self.cuda))

    def close(self):
        self.handle.remove()


def step_times(ends: list[float], warmup: int, total: int) -> list[float]:
    """``ends[k]``: the end of step k+1; the durations of steps warmup+1 .. (each starts at the end of the one
    before)."""
    if len(ends) != total:
        raise RuntimeError(f"saw {len(ends)} optimizer steps, expected {total}: cannot time the steps")
    return [ends[k] - ends[k - 1] for k in range(warmup, len(ends))]


def steady(ends: list[float], warmup: int, batch: int, block: int, total: int) -> dict:
    """Tokens/s of the timed steps (``step_times``) of ``batch`` x ``block`` tokens, and their spread."""
    timed = step_times(ends, warmup, total)
    tokens = batch * block
    return {"timed_steps": len(timed), "timed_s": sum(timed), "tok_s": len(timed) * tokens / sum(timed),
            "step_ms_median": 1000 * statistics.median(timed), "step_ms_min": 1000 * min(timed),
            "step_ms_max": 1000 * max(timed), "tok_s_median_step": tokens / statistics.median(timed),
            "tok_s_fastest_step": tokens / min(timed)}


# ------------------------------------------------------------------------------------------ peak, FLOPs

def matmul_peak(device: str, dtype_name: str, n: int, reps: int) -> dict:
    """Best and median GFLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs) in ``dtype_name``."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    del a, b
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"dtype": dtype_name, "n": n, "reps": reps, "gflops_best": flops / min(times) / 1e9,
            "gflops_median": flops / statistics.median(times) / 1e9}


def flop_counts(layers: int, hidden: int, heads: int, inter: int, vocab: int, block: int, masked: float) -> dict:
    """Training FLOPs per token (forward + backward = 3 x forward, PaLM-style accounting)."""
    enc = layers * (4 * hidden * hidden + 4 * hidden        # Q, K, V, O
                    + 2 * hidden * inter + inter + hidden   # FFN
                    + 4 * hidden)                           # 2 LayerNorms
    head = hidden * hidden + hidden + 2 * hidden + hidden * vocab + vocab  # dense, LayerNorm, decoder (tied)
    attn = 12 * layers * block * hidden
    return {"encoder_params": enc, "head_params": head, "attention": attn,
            "hf": 6 * enc + attn + 6 * head, "ours": 6 * enc + attn + 6 * head * masked}
