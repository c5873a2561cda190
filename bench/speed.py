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
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import worker
from common import (SEED, StepClock, cpu_info, flop_counts, load_blocks, matmul_peak, model_config, prepare_data,
                    steady)

SHAPES = {  # layers, hidden, heads, intermediate
    "roberta-4x256": (4, 256, 4, 1024),
    "roberta-base": (12, 768, 12, 3072),
}
H100_BF16_DENSE_TFLOPS = 989.0


# ---------------------------------------------------------------------------------------------- FLOPs

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
    import torch
    from transformers import AutoModelForMaskedLM

    from mlmpipe import params as P
    from mlmpipe import tokenizer, training
    from mlmpipe.compute import resolve_attention
    from mlmpipe.masking import Masker

    torch.set_num_threads(spec["threads"])
    d = Path(spec["data"])
    tok = tokenizer.load(str(d / "tokenizer"))
    train_data, val_data = load_blocks(d, "train"), load_blocks(d, "validation")
    config = model_config(tok, spec["block"], spec["dims"], spec["dropout"])
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
    import torch
    from transformers import AutoTokenizer

    import hf_recipe

    torch.set_num_threads(spec["threads"])
    d = Path(spec["data"])
    tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
    blocks = load_blocks(d, "train")
    model = hf_recipe.make_model(model_config(tok, spec["block"], spec["dims"], spec["dropout"],
                                              spec.get("hf_attn")), seed=SEED)
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

def precision_choices() -> tuple:
    """The values this checkout's ``pretrain.mixed_precision`` accepts."""
    import typing

    from mlmpipe import params as P

    return typing.get_args(typing.get_type_hints(P.Pretrain)["mixed_precision"])


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
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
    return ap, ap.parse_args()


def check_args(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.ours_only and a.hf_only:
        ap.error("--ours-only and --hf-only exclude each other")
    if a.ours_precision not in precision_choices():
        ap.error(f"--ours-precision {a.ours_precision!r}: pretrain.mixed_precision accepts {precision_choices()}")
    if a.steps < 1 or a.warmup < 1 or a.repeats < 1:
        ap.error("--steps, --warmup and --repeats must be >= 1 (the first step's start is not observable)")


def machine(ap: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[str, int]:
    """The device and torch threads (set here); prints the header, and a warning when the CPU is loaded."""
    import numpy as np  # noqa: F401  (fail early if the venv is not there)
    import torch

    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible to torch")
    threads = a.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"# speed benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"device: {device} ({torch.cuda.get_device_name() if device == 'cuda' else cpu_info()}); "
          f"torch {torch.__version__}; threads {threads}; load average {os.getloadavg()[0]:.2f} "
          f"(the CPU may be shared with other jobs)")
    if os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: other jobs compete for the "
              "CPU, so the figures are noisy and low" + (
                  f"; with {threads} torch threads every parallel op also waits for whichever thread is descheduled "
                  "(try --threads 1 for comparison)" if threads > 1 else ""))
    return device, threads


def data(a: argparse.Namespace) -> tuple[Path, dict, tempfile.TemporaryDirectory | None]:
    """The blocks both sides train on (``--data`` or a temp dir, returned to clean up); prints data and shape."""
    tmp = None
    if a.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_speed_")
        data_dir = Path(tmp.name)
    else:
        data_dir = a.data
    meta = prepare_data(data_dir, a.vocab, a.block)
    layers, hidden, heads, inter = SHAPES[a.shape]
    print(f"data: builtin:python-docs, {meta['documents']} documents, {meta['bytes'] / 1e6:.1f} MB; BPE vocab "
          f"{meta['vocab_size']} (requested {a.vocab}); {meta['train_blocks']} train blocks of {a.block} tokens "
          f"(prepared in {meta.get('prepare_s', 0)} s, {data_dir if tmp is None else 'temp dir'})")
    print(f"shape: {a.shape}: RoBERTa {layers} layers x {hidden} hidden, {heads} heads, intermediate {inter}; "
          f"batch {a.batch} x block {a.block} = {a.batch * a.block} tokens/step; {a.warmup} warm-up + "
          f"{a.steps} timed steps per run")
    return data_dir, meta, tmp


def peaks(device: str, n: int) -> dict:
    return {"bf16": matmul_peak(device, "bf16", n, 5), "fp32": matmul_peak(device, "fp32", n, 3)}


def plan_runs(a: argparse.Namespace, base: dict, our_dropout: float) -> list[tuple[str, dict]]:
    """(name, worker spec) of every run: ours and the recipe, and with ``--levers`` one change each."""
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
    return plan


def report_run(name: str, r: dict) -> None:
    extra = (f"; compute-only (on_step_begin->end) {r['compute_only_tok_s']:.0f} tok/s"
             if "compute_only_tok_s" in r else "")
    print(f"run {name:<32} {r['tok_s']:9.0f} tok/s  ({r['tok_s_median_step']:.0f} from the median step, "
          f"{r['tok_s_fastest_step']:.0f} from the fastest; "
          f"step median {r['step_ms_median']:.1f} ms, min {r['step_ms_min']:.1f}, max {r['step_ms_max']:.1f}); "
          f"dropout {r['dropout']}, attention {r['attn_implementation']}; wall {r['wall_s']:.0f} s{extra}", flush=True)
    if r.get("profile"):
        print(f"--- profile: {name} (all steps, warm-up included)\n{r['profile']}", flush=True)


def run_plan(plan: list[tuple[str, dict]], repeats: int) -> tuple[dict, dict]:
    """Every run of the plan ``repeats`` times, alternating; (all results per name, the median-tok/s one per name)."""
    every: dict[str, list] = {}
    for rep in range(repeats):
        for name, spec in plan:
            r = worker.run(__file__, spec["side"], spec, name, cpu_only=spec["device"] == "cpu")
            every.setdefault(name, []).append(r)
            report_run(f"{name}{f' #{rep + 1}' if repeats > 1 else ''}", r)
    runs = {name: sorted(rs, key=lambda r: r["tok_s"])[(len(rs) - 1) // 2] for name, rs in every.items()}
    if repeats > 1:
        print(f"(each figure below is the median of {repeats} runs; spread = min-max)")
        for name, rs in every.items():
            t = [r["tok_s"] for r in rs]
            print(f"  {name:<32} median {statistics.median(t):9.0f} tok/s, spread {min(t):.0f}-{max(t):.0f}")
    return every, runs


def report_flops(a: argparse.Namespace, device: str, runs: dict, peak: dict, data_dir: Path, vocab: int) -> None:
    """FLOPs per token of each side and each run's achieved TFLOP/s against the measured peak (and MFU on CUDA)."""
    layers, hidden, heads, inter = SHAPES[a.shape]
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


def report_differences(runs: dict, our_dropout: float) -> None:
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
    if "ours" in runs:
        ours_r = runs["ours"]
        print(f"  ours: train loss (10-step windows) {ours_r['loss_first']:.3f} -> {ours_r['loss_last']:.3f}; peak RSS "
              f"{ours_r['peak_rss_mb']:.0f} MB (whole worker process)")
    if "hf_bf16" in runs:
        print(f"  hf:   mean train loss {runs['hf_bf16']['train_loss_mean']:.3f}")


def report_levers(runs: dict, ours_precision: str, our_dropout: float) -> None:
    print(f"levers (ours = sparse_head true, mixed_precision {ours_precision}, dropout {our_dropout}, "
          "attention_kernel auto; each row changes one thing):")
    for name in [k for k in runs if k.startswith(("ours ", "hf_bf16 "))]:
        r, side = runs[name], name.split()[0]  # each lever against its own side's run
        ref_r = runs[side]
        fast, ref_fast = r["tok_s_fastest_step"], ref_r["tok_s_fastest_step"]
        print(f"lever {name:<32} {r['tok_s']:9.0f} tok/s = {r['tok_s'] / ref_r['tok_s']:.2f} x {side} (fastest "
              f"steps: {fast:.0f} = {fast / ref_fast:.2f} x)")


def last_line(every: dict, runs: dict, repeats: int) -> str:
    """The ``ours_tok_s=... hf_bf16_tok_s=... ratio=...`` line; with repeats, prints the paired ratios first."""
    ours_r, hf_r = runs.get("ours"), runs.get("hf_bf16")
    o = ours_r["tok_s"] if ours_r else float("nan")
    h = hf_r["tok_s"] if hf_r else float("nan")
    ratio = o / h if ours_r and hf_r else float("nan")
    if ours_r and hf_r and repeats > 1:  # each repeat ran both sides back to back: a paired ratio
        pairs = [x["tok_s"] / y["tok_s"] for x, y in zip(every["ours"], every["hf_bf16"])]
        ratio = statistics.median(pairs)
        print(f"ratio per repeat (ours / hf, back to back): {', '.join(f'{r:.2f}' for r in pairs)}; median "
              f"{ratio:.2f}, spread {min(pairs):.2f}-{max(pairs):.2f}")
    return f"ours_tok_s={o:.0f} hf_bf16_tok_s={h:.0f} ratio={ratio:.2f}"


def main() -> None:
    ap, a = parse_args()
    if worker.serve(a, {"ours": worker_ours, "hf": worker_hf}):
        return
    check_args(ap, a)
    sys.stdout.reconfigure(line_buffering=True)
    from mlmpipe import params as P

    device, threads = machine(ap, a)
    our_dropout = P.Model().dropout
    data_dir, meta, tmp = data(a)
    n = a.peak_n or (8192 if device == "cuda" else 4096)
    before = peaks(device, n)
    print(f"matmul peak (before runs, {n}^3): bf16 {before['bf16']['gflops_best']:.0f} GFLOP/s, "
          f"fp32 {before['fp32']['gflops_best']:.0f} GFLOP/s")

    base = {"data": str(data_dir), "dims": list(SHAPES[a.shape]), "block": a.block, "batch": a.batch,
            "steps": a.steps, "warmup": a.warmup, "threads": threads, "device": device, "profile": a.profile,
            "num_workers": a.hf_workers}
    every, runs = run_plan(plan_runs(a, base, our_dropout), a.repeats)

    after = peaks(device, n)
    peak = {k: max(before[k]["gflops_best"], after[k]["gflops_best"]) for k in before}
    print(f"matmul peak (after runs): bf16 {after['bf16']['gflops_best']:.0f} GFLOP/s, fp32 "
          f"{after['fp32']['gflops_best']:.0f} GFLOP/s; using the best: bf16 {peak['bf16']:.0f}, "
          f"fp32 {peak['fp32']:.0f} GFLOP/s")
    report_flops(a, device, runs, peak, data_dir, meta["vocab_size"])
    report_differences(runs, our_dropout)
    if a.levers and "ours" in runs:
        report_levers(runs, a.ours_precision, our_dropout)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    line = last_line(every, runs, a.repeats)
    if tmp is not None:
        tmp.cleanup()
    print(line)


if __name__ == "__main__":
    main()
