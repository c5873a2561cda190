"""Throughput of our pretrain step loop against the Hugging Face Trainer recipe, same shape, data and steps.

    .venv/bin/python bench/speed.py                 # RoBERTa 4 x 256, block 128, batch 32, 10 + 60 steps
    .venv/bin/python bench/speed.py --levers        # also: our loop with one lever off at a time
    .venv/bin/python bench/speed.py --shape roberta-base --device cuda --steps 100

Each training run happens in a fresh subprocess (accelerate's process-wide state, thread pools and
allocator caches do not leak from one run into the next). Every run does ``--warmup`` untimed steps,
then ``--steps`` timed ones; tokens/s = timed steps x batch x block / their wall time, where a step
is everything from fetching its batch (indexing, masking/collation) to the end of the optimizer step.
The bf16 (and fp32) matmul peak is measured in this process, before and after the runs.

The last line is ``ours_tok_s=<n> hf_bf16_tok_s=<n> ratio=<ours/hf>``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # mlmpipe from this checkout even without `pip install -e`
sys.path.insert(0, str(HERE))

import worker  # noqa: E402

SHAPES = {  # layers, hidden, heads, intermediate
    "roberta-4x256": (4, 256, 4, 1024),
    "roberta-base": (12, 768, 12, 3072),
}
H100_BF16_DENSE_TFLOPS = 989.0
SEED = 42


# ----------------------------------------------------------------------------------------------- data

def prepare_data(d: Path, vocab: int, block: int) -> dict:
    """Default corpus -> cleaned split -> byte-level BPE (``vocab`` requested) -> ``block``-token blocks,
    all through the library; cached in ``d`` (reused when vocab and block match)."""
    meta_file = d / "meta.json"
    want = {"vocab_requested": vocab, "block_size": block, "source": "builtin:python-docs"}
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            return meta
    import datasets
    import numpy as np

    from mlmpipe import corpus, grouping, sources, tokenizer

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    d.mkdir(parents=True, exist_ok=True)
    cdir = d / "corpus"
    cdir.mkdir(exist_ok=True)
    docs = corpus.clean(sources.builtin_python_docs(), 40, True, None)
    cstats = corpus.write_corpus(docs, cdir, SEED, 0.05)
    tok = tokenizer.train(corpus.read_split(cdir, "train"), "bpe", vocab, 2, False, 512)
    tok.save_pretrained(str(d / "tokenizer"))
    counts = {}
    for split in ("train", "validation"):
        ds = grouping.tokenize_split(cdir / f"{split}.parquet", tok, "group", block, 1, 1000, d / "scratch")
        grouping.save_split(ds, d / "tokenized" / split)
        del ds
        arr = grouping.load_blocks(d / "tokenized" / split)
        np.save(d / f"{split}.npy", np.ascontiguousarray(arr, dtype=np.int32))
        counts[split] = int(arr.shape[0])
    grouping.clear_scratch(d / "scratch")
    meta = {**want, "vocab_size": len(tok), "documents": cstats["documents"], "bytes": cstats["bytes"],
            "train_blocks": counts["train"], "validation_blocks": counts["validation"],
            "prepare_s": round(time.perf_counter() - t0, 1)}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta


# ----------------------------------------------------------------------------------------------- peak

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


# ---------------------------------------------------------------------------------------------- FLOPs

def flop_counts(layers: int, hidden: int, heads: int, inter: int, vocab: int, block: int, masked: float) -> dict:
    """Training FLOPs per token (forward + backward = 3 x forward, PaLM-style accounting)."""
    enc = layers * (4 * hidden * hidden + 4 * hidden        # Q, K, V, O
                    + 2 * hidden * inter + inter + hidden   # FFN
                    + 4 * hidden)                           # 2 LayerNorms
    head = hidden * hidden + hidden + 2 * hidden + hidden * vocab + vocab  # dense, LayerNorm, decoder (tied)
    attn = 12 * layers * block * hidden
    return {"encoder_params": enc, "head_params": head, "attention": attn,
            "hf": 6 * enc + attn + 6 * head, "ours": 6 * enc + attn + 6 * head * masked}


def masked_fraction(train_path: Path, tok_dir: Path) -> float:
    import numpy as np
    import torch

    from mlmpipe import tokenizer
    from mlmpipe.masking import IGNORE, Masker, generator

    tok = tokenizer.load(str(tok_dir))
    blocks = np.load(train_path, mmap_mode="r")[:4096]
    _, labels = Masker.from_tokenizer(tok)(torch.from_numpy(blocks.astype(np.int64)), 0.15, generator(0))
    return float((labels != IGNORE).float().mean())


# -------------------------------------------------------------------------------------------- workers

def steady(ends: list[float], warmup: int, batch: int, block: int, total: int) -> dict:
    """``ends[k]``: the end of step k+1; steps warmup+1 .. are timed (their start is the end of the one before)."""
    if len(ends) != total:
        raise RuntimeError(f"saw {len(ends)} optimizer steps, expected {total}: cannot time the steps")
    timed = [ends[k] - ends[k - 1] for k in range(warmup, len(ends))]
    tokens = batch * block
    return {"timed_steps": len(timed), "timed_s": sum(timed), "tok_s": len(timed) * tokens / sum(timed),
            "step_ms_median": 1000 * statistics.median(timed), "step_ms_min": 1000 * min(timed),
            "step_ms_max": 1000 * max(timed), "tok_s_median_step": tokens / statistics.median(timed),
            "tok_s_fastest_step": tokens / min(timed)}


class StepClock:
    """Records the time after every ``optimizer.step()`` of any optimizer in the process (a global torch hook),
    so both loops are timed the same way without relying on their logging: the interval between two
    consecutive step ends is one whole step (batch, masking or collation, forward, backward, update)."""

    def __init__(self, cuda: bool):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.cuda, self.ends = cuda, []
        self.handle = register_optimizer_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def close(self):
        self.handle.remove()


def profiled(enabled: bool, fn):
    if not enabled:
        return fn(), None
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        out = fn()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return out, prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60)


def worker_ours(spec: dict) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForMaskedLM

    from mlmpipe import model as M
    from mlmpipe import params as P
    from mlmpipe.compute import resolve_attention
    from mlmpipe import tokenizer, training
    from mlmpipe.masking import Masker

    torch.set_num_threads(spec["threads"])
    d = Path(spec["data"])
    tok = tokenizer.load(str(d / "tokenizer"))
    train_data = np.load(d / "train.npy")
    val_data = np.load(d / "validation.npy")
    layers, hidden, heads, inter = spec["dims"]
    m = P.Model(family="roberta", layers=layers, hidden=hidden, heads=heads, intermediate=inter,
                dropout=spec["dropout"])
    config = M.make_config(m, tok, spec["block"])
    torch.manual_seed(SEED)
    model = AutoModelForMaskedLM.from_config(config)
    total = spec["warmup"] + spec["steps"]
    # the Hugging Face recipe's masking rate and fixed block cuts, so both loops see the same work
    p = P.Pretrain(batch_size=spec["batch"], max_steps=total, mixed_precision=spec["mixed_precision"],
                   mlm_probability=0.15, random_offsets=False,
                   sparse_head=spec["sparse_head"], num_threads=spec["threads"], log_every=10,
                   eval_every=10 ** 9, checkpoint_every=10 ** 9, compile=spec.get("compile", False),
                   attention_kernel=spec.get("attention_kernel", "auto"))
    ckpt = tempfile.mkdtemp(prefix="bench_ckpt_")

    def run():
        return training.train(model, train_data, val_data, Masker.from_tokenizer(tok), p, SEED,
                              tok.pad_token_id, ckpt, "bench", show_progress=False)

    clock = StepClock(spec["device"] == "cuda")
    try:
        (model, hist, summary), table = profiled(spec["profile"], run)
    finally:
        clock.close()
        shutil.rmtree(ckpt, ignore_errors=True)
    out = steady(clock.ends, spec["warmup"], spec["batch"], spec["block"], total)
    losses = [r.get("loss", float("nan")) for r in hist.train] or [float("nan")]
    attn = f"{resolve_attention(p.attention_kernel, spec['device'])} (pretrain.attention_kernel {p.attention_kernel})"
    out.update({"attn_implementation": attn, "dropout": config.hidden_dropout_prob,
                "summary_tok_s_all_steps": summary.get("tokens_per_s"),
                "mixed_precision": summary.get("mixed_precision"),
                "device": summary.get("device"), "loss_first": losses[0], "loss_last": losses[-1],
                "peak_rss_mb": summary.get("peak_rss_mb", float("nan")), "vocab_size": len(tok), "profile": table})
    return out


def worker_hf(spec: dict) -> dict:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    import hf_recipe

    torch.set_num_threads(spec["threads"])
    d = Path(spec["data"])
    tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
    blocks = np.load(d / "train.npy")
    layers, hidden, heads, inter = spec["dims"]
    model = hf_recipe.make_model(len(tok), spec["block"], layers, hidden, heads, inter, tok.pad_token_id,
                                 tok.bos_token_id, tok.eos_token_id, dropout=spec["dropout"], seed=SEED,
                                 attn_implementation=spec.get("hf_attn"))
    total = spec["warmup"] + spec["steps"]
    clock = StepClock(spec["device"] == "cuda")
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as output_dir:
        (res, timer), table = profiled(spec["profile"], lambda: hf_recipe.train(
            model, tok, blocks, total, spec["batch"], use_cpu=spec["device"] == "cpu",
            bf16=spec["mixed_precision"] == "bf16", num_workers=spec["num_workers"], seed=SEED,
            output_dir=output_dir))
    clock.close()
    out = steady(clock.ends, spec["warmup"], spec["batch"], spec["block"], total)
    compute = [e - b for b, e in zip(timer.begin[spec["warmup"]:], timer.end[spec["warmup"]:])]
    out.update({"attn_implementation": model.config._attn_implementation,
                "dropout": model.config.hidden_dropout_prob, "compute_only_tok_s":
                len(compute) * spec["batch"] * spec["block"] / sum(compute),
                "train_loss_mean": res.training_loss, "device": str(model.device),
                "vocab_size": len(tok), "profile": table})
    return out


# ----------------------------------------------------------------------------------------------- main

def cpu_info() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    isa = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(isa) or 'no AVX'}"


def precision_choices() -> tuple:
    """The values this checkout's ``pretrain.mixed_precision`` accepts."""
    import typing

    from mlmpipe import params as P

    return typing.get_args(typing.get_type_hints(P.Pretrain)["mixed_precision"])


def report_run(name: str, r: dict) -> None:
    extra = (f"; compute-only (on_step_begin->end) {r['compute_only_tok_s']:.0f} tok/s"
             if "compute_only_tok_s" in r else "")
    print(f"run {name:<32} {r['tok_s']:9.0f} tok/s  ({r['tok_s_median_step']:.0f} from the median step, "
          f"{r['tok_s_fastest_step']:.0f} from the fastest; "
          f"step median {r['step_ms_median']:.1f} ms, min {r['step_ms_min']:.1f}, max {r['step_ms_max']:.1f}); "
          f"dropout {r['dropout']}, attention {r['attn_implementation']}; wall {r['wall_s']:.0f} s{extra}", flush=True)
    if r.get("profile"):
        print(f"--- profile: {name} (all steps, warm-up included)\n{r['profile']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before the timed ones (>= 1)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="roberta-4x256")
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8192, help="requested BPE vocabulary size")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads, both sides and the peak (0: all CPUs)")
    ap.add_argument("--ours-only", action="store_true")
    ap.add_argument("--hf-only", action="store_true")
    ap.add_argument("--levers", action="store_true",
                    help="also run our loop with one change each: sparse_head false, mixed_precision no, dropout 0.1 "
                         "(the HF default), attention_kernel math / default (SDPA's math kernel / PyTorch's "
                         "SDPA choice), bf16 "
                         "autocast, torch.compile; and the HF recipe with eager attention")
    ap.add_argument("--repeats", type=int, default=3,
                    help="run every measurement this many times, alternating sides; report the median and spread")
    ap.add_argument("--ours-precision", default="auto",
                    help="pretrain.mixed_precision of our side (auto, the pipeline default: bf16-pure on a CPU with "
                         "native bf16, bf16 autocast on GPU)")
    ap.add_argument("--hf-attn", choices=("sdpa", "eager"), default=None,
                    help="attn_implementation of the HF side (default: transformers' default, sdpa)")
    ap.add_argument("--hf-dropout", type=float, default=None,
                    help="dropout of the HF side (default: the RobertaConfig default, 0.1, as the recipe has it)")
    ap.add_argument("--hf-workers", type=int, default=0, help="dataloader_num_workers of the HF side")
    ap.add_argument("--data", type=Path, default=None,
                    help="directory to build (or reuse, when vocab/block match) the data in; default: a temp dir")
    ap.add_argument("--peak-n", type=int, default=0, help="matmul size for the peak (0: 4096 CPU, 8192 CUDA)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler top ops of every run")
    worker.add_args(ap, ("ours", "hf"))
    a = ap.parse_args()
    if worker.serve(a, {"ours": worker_ours, "hf": worker_hf}):
        return
    if a.ours_only and a.hf_only:
        ap.error("--ours-only and --hf-only exclude each other")
    if a.ours_precision not in precision_choices():
        ap.error(f"--ours-precision {a.ours_precision!r}: pretrain.mixed_precision accepts {precision_choices()}")
    if a.steps < 1 or a.warmup < 1 or a.repeats < 1:
        ap.error("--steps, --warmup and --repeats must be >= 1 (the first step's start is not observable)")
    sys.stdout.reconfigure(line_buffering=True)

    import numpy as np  # noqa: F401  (fail early if the venv is not there)
    import torch

    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible to torch")
    threads = a.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    layers, hidden, heads, inter = SHAPES[a.shape]
    our_dropout = __import__("mlmpipe.params", fromlist=["Model"]).Model().dropout

    print(f"# speed benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"device: {device} ({torch.cuda.get_device_name() if device == 'cuda' else cpu_info()}); "
          f"torch {torch.__version__}; threads {threads}; load average {os.getloadavg()[0]:.2f} "
          f"(the CPU may be shared with other jobs)")

    if os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: other jobs compete for the "
              "CPU, so the figures are noisy and low" + (
                  f"; with {threads} torch threads every parallel op also waits for whichever thread is descheduled "
                  "(try --threads 1 for comparison)" if threads > 1 else ""))
    tmp = None
    if a.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_speed_")
        data_dir = Path(tmp.name)
    else:
        data_dir = a.data
    meta = prepare_data(data_dir, a.vocab, a.block)
    vocab = meta["vocab_size"]
    print(f"data: builtin:python-docs, {meta['documents']} documents, {meta['bytes'] / 1e6:.1f} MB; BPE vocab "
          f"{vocab} (requested {a.vocab}); {meta['train_blocks']} train blocks of {a.block} tokens "
          f"(prepared in {meta.get('prepare_s', 0)} s, {data_dir if tmp is None else 'temp dir'})")
    print(f"shape: {a.shape}: RoBERTa {layers} layers x {hidden} hidden, {heads} heads, intermediate {inter}; "
          f"batch {a.batch} x block {a.block} = {a.batch * a.block} tokens/step; {a.warmup} warm-up + "
          f"{a.steps} timed steps per run")

    n = a.peak_n or (8192 if device == "cuda" else 4096)
    peaks = {"bf16": [matmul_peak(device, "bf16", n, 5)], "fp32": [matmul_peak(device, "fp32", n, 3)]}
    print(f"matmul peak (before runs, {n}^3): bf16 {peaks['bf16'][0]['gflops_best']:.0f} GFLOP/s, "
          f"fp32 {peaks['fp32'][0]['gflops_best']:.0f} GFLOP/s")

    base = {"data": str(data_dir), "dims": [layers, hidden, heads, inter], "block": a.block, "batch": a.batch,
            "steps": a.steps, "warmup": a.warmup, "threads": threads, "device": device, "profile": a.profile,
            "num_workers": a.hf_workers}
    runs: dict[str, dict] = {}
    plan = []
    if not a.hf_only:
        plan.append(("ours", {**base, "side": "ours", "mixed_precision": a.ours_precision, "sparse_head": True,
                              "dropout": our_dropout}))
    if not a.ours_only:
        plan.append(("hf_bf16", {**base, "side": "hf", "mixed_precision": "bf16", "dropout": a.hf_dropout,
                                 "hf_attn": a.hf_attn}))
    if a.levers and not a.hf_only:
        ours = plan[0][1]
        plan += [("ours sparse_head=false", {**ours, "sparse_head": False}),
                 ("ours mixed_precision=no", {**ours, "mixed_precision": "no"}),
                 ("ours dropout=0.1", {**ours, "dropout": 0.1}),
                 ("ours attention_kernel=math", {**ours, "attention_kernel": "math"}),
                 ("ours attention_kernel=default", {**ours, "attention_kernel": "default"}),
                 ("ours mixed_precision=bf16", {**ours, "mixed_precision": "bf16"}),
                 ("ours compile", {**ours, "compile": True})]
        if not a.ours_only:  # the recipe with transformers' eager attention instead of its default (sdpa)
            plan.append(("hf_bf16 attn=eager", {**plan[1][1], "hf_attn": "eager"}))
    every: dict[str, list] = {}
    for rep in range(a.repeats):
        for name, spec in plan:
            r = worker.run(__file__, spec["side"], spec, name, cpu_only=spec["device"] == "cpu")
            every.setdefault(name, []).append(r)
            report_run(f"{name}{f' #{rep + 1}' if a.repeats > 1 else ''}", r)
    for name, rs in every.items():  # the run with the median tokens/s stands for each side
        runs[name] = sorted(rs, key=lambda r: r["tok_s"])[(len(rs) - 1) // 2]
    if a.repeats > 1:
        print(f"(each figure below is the median of {a.repeats} runs; spread = min-max)")
        for name, rs in every.items():
            t = [r["tok_s"] for r in rs]
            print(f"  {name:<32} median {statistics.median(t):9.0f} tok/s, spread {min(t):.0f}-{max(t):.0f}")

    peaks["bf16"].append(matmul_peak(device, "bf16", n, 5))
    peaks["fp32"].append(matmul_peak(device, "fp32", n, 3))
    peak = {k: max(p["gflops_best"] for p in v) for k, v in peaks.items()}
    print(f"matmul peak (after runs): bf16 {peaks['bf16'][1]['gflops_best']:.0f} GFLOP/s, fp32 "
          f"{peaks['fp32'][1]['gflops_best']:.0f} GFLOP/s; using the best: bf16 {peak['bf16']:.0f}, "
          f"fp32 {peak['fp32']:.0f} GFLOP/s")

    f_mask = masked_fraction(data_dir / "train.npy", data_dir / "tokenizer")
    fl = flop_counts(layers, hidden, heads, inter, vocab, a.block, f_mask)
    print("FLOPs/token = 6 x N_enc + 12 x layers x block x hidden + 6 x N_head x h, where N_enc = encoder "
          "params without embeddings, N_head = MLM head (dense + LayerNorm + tied decoder), h = 1 for the HF "
          "recipe (head on every position) and h = masked fraction for ours (sparse head)")
    print(f"  N_enc {fl['encoder_params']:,}  N_head {fl['head_params']:,}  attention {fl['attention']:,}  "
          f"masked fraction {f_mask:.4f}")
    print(f"  FLOPs/token: hf {fl['hf'] / 1e6:.2f} M, ours {fl['ours'] / 1e6:.2f} M "
          f"(ours with sparse_head=false: {fl['hf'] / 1e6:.2f} M)")
    for name, r in runs.items():
        per_tok = fl["hf"] if (name.startswith("hf") or "sparse_head=false" in name) else fl["ours"]
        ref = "fp32" if "mixed_precision=no" in name or (name == "ours" and a.ours_precision == "no") else "bf16"
        achieved = per_tok * r["tok_s"] / 1e12
        line = (f"  {name:<32} {achieved:7.3f} TFLOP/s = {100 * achieved * 1e3 / peak[ref]:5.1f}% of measured "
                f"{ref} peak")
        if device == "cuda":
            mfu = 100 * achieved / H100_BF16_DENSE_TFLOPS
            line += f", MFU {mfu:.2f}% of {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s (H100)"
        print(line)

    print("differences (ours vs HF recipe): dropout "
          f"{our_dropout} (our params default) vs {runs['hf_bf16']['dropout'] if 'hf_bf16' in runs else '-'} "
          "(RobertaConfig default); our MLM head runs on masked positions only (sparse_head), HF's on every "
          "position; masking: our vectorized Masker vs DataCollatorForLanguageModeling; loop: mlmpipe.training "
          "(accelerate, fused AdamW, clip 1.0) vs Trainer (fused AdamW, clip 1.0); precision: ours "
          f"{runs['ours']['mixed_precision'] if 'ours' in runs else '-'} (bf16-pure: bf16 weights and compute, fp32 "
          "master weights in the optimizer) vs bf16 autocast with fp32 weights; attention: ours "
          "pretrain.attention_kernel auto (on CPU: matmul, two bf16 matmuls and a softmax), HF's "
          f"{runs['hf_bf16']['attn_implementation'] if 'hf_bf16' in runs else '-'} (with sdpa and dropout > 0 "
          "PyTorch picks the math kernel, which upcasts bf16 to fp32); same: blocks, batch, torch threads")
    ours_r, hf_r = runs.get("ours"), runs.get("hf_bf16")
    if "ours" in runs:
        print(f"  ours: train loss (10-step windows) {ours_r['loss_first']:.3f} -> {ours_r['loss_last']:.3f}; peak RSS "
              f"{ours_r['peak_rss_mb']:.0f} MB (whole worker process)")
    if hf_r:
        print(f"  hf:   mean train loss {hf_r['train_loss_mean']:.3f}")
    if a.levers and ours_r:
        print(f"levers (ours = sparse_head true, mixed_precision {a.ours_precision}, dropout {our_dropout}, "
              "attention_kernel auto; each row changes one thing):")
        for name in [k for k in runs if k.startswith(("ours ", "hf_bf16 "))]:
            r, side = runs[name], name.split()[0]  # each lever against its own side's run
            ref_r = runs[side]
            fast, ref_fast = r["tok_s_fastest_step"], ref_r["tok_s_fastest_step"]
            print(f"lever {name:<32} {r['tok_s']:9.0f} tok/s = {r['tok_s'] / ref_r['tok_s']:.2f} x {side} (fastest "
                  f"steps: {fast:.0f} = {fast / ref_fast:.2f} x)")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    o = ours_r["tok_s"] if ours_r else float("nan")
    h = hf_r["tok_s"] if hf_r else float("nan")
    ratio = o / h if ours_r and hf_r else float("nan")
    if ours_r and hf_r and a.repeats > 1:  # each repeat ran both sides back to back: a paired ratio
        pairs = [x["tok_s"] / y["tok_s"] for x, y in zip(every["ours"], every["hf_bf16"])]
        ratio = statistics.median(pairs)
        print(f"ratio per repeat (ours / hf, back to back): {', '.join(f'{r:.2f}' for r in pairs)}; median "
              f"{ratio:.2f}, spread {min(pairs):.2f}-{max(pairs):.2f}")
    if tmp is not None:
        tmp.cleanup()
    print(f"ours_tok_s={o:.0f} hf_bf16_tok_s={h:.0f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
