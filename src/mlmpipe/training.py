"""The pretraining loop, on accelerate: the same code on CPU, one GPU, or many under ``accelerate launch``.

Everything random is a pure function of (seed, step): the epoch permutation, the masks, dropout.
So a run resumed from a checkpoint continues exactly as an uninterrupted one, and the global batch
(``batch_size`` sequences per optimizer step) is the same whatever the number of processes.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .checkpoints import Checkpoints
from .compute import Bf16Weights, SparseMLM, accelerator_for, attention_kernel, make_optimizer, resolve_precision
from .validation import fixed_masks, validation_metrics
from .masking import IGNORE, Masker, generator, pad_batch
from .model import has_nsp_head
from .params import MlmpipeError

log = logging.getLogger(__name__)


class TrainingError(MlmpipeError):
    pass


class Interrupted(MlmpipeError):
    pass


@dataclass
class History:
    train: list = field(default_factory=list)  # rows: step, loss, lr, tokens_per_s
    val: list = field(default_factory=list)    # rows: step, val_loss, val_top1


def schedule(p, total: int):
    def factor(step: int) -> float:
        if step < p.warmup_steps:
            return (step + 1) / p.warmup_steps
        if p.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - p.warmup_steps) / max(1, total - p.warmup_steps))
        return 1 - frac if p.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
    return factor


def crop_blocks(blocks: np.ndarray, idx: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Examples of step ``step`` cut from the token stream at a seeded random offset after block ``idx``
    (``idx`` < number of blocks - 1), so each epoch sees the text cut at new places, not the same blocks."""
    width = blocks.shape[1]
    flat = blocks.reshape(-1)
    offsets = np.random.default_rng([seed, step, 7]).integers(0, width, size=len(idx))
    return flat[(idx * width + offsets)[:, None] + np.arange(width)]


class Lengths:
    """Example lengths for length-grouped batches (``pretrain.group_by_length``); hashed by identity, so an
    epoch's order is computed once and cached."""

    def __init__(self, values):
        self.values = np.asarray(values)


def global_batches(n: int, batch: int, seed: int, step: int, lengths: Lengths | None = None) -> np.ndarray:
    """Example indices of optimizer step ``step``: a seeded permutation per epoch, last partial batch dropped.
    With ``lengths``, batches hold examples of similar length (less padding), in a seeded random order."""
    per_epoch = n // batch
    epoch, pos = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch, batch if lengths is not None else 0, lengths)[pos * batch:(pos + 1) * batch]


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int, batch: int, lengths: Lengths | None) -> np.ndarray:
    """Computed once per epoch instead of every step (it costs O(n): 390 ms at 10M blocks). With lengths, as
    the Trainer's ``group_by_length``: megabatches of 50 batches of the permutation, each sorted by length
    and cut into batches; then the batches are shuffled."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    if lengths is not None:
        mega = 50 * batch
        perm = np.concatenate([c[np.argsort(-lengths.values[c], kind="stable")]
                               for c in np.split(perm, range(mega, n, mega))])
        k = n // batch
        perm = np.concatenate([perm[:k * batch].reshape(k, batch)[rng.permutation(k)].reshape(-1), perm[k * batch:]])
    perm.flags.writeable = False
    return perm


def train(model, train_data, val_data, masker: Masker, p, seed: int, pad_id: int, checkpoint_dir: str,
          fingerprint_: str, show_progress: bool = True, train_pairs=None, val_pairs=None
          ) -> tuple[object, History, dict]:
    """Train ``model`` in place; returns the unwrapped model, the curves and summary metrics.

    ``train_pairs``/``val_pairs``: (segment ids, next-sentence labels) of sentence-pair data; a model with a
    next-sentence head (BertForPreTraining) then also learns that objective, loss = MLM mean + NSP mean."""
    precision = resolve_precision(p.mixed_precision)
    pure = precision == "bf16-pure"
    accelerator = accelerator_for("no" if pure else precision)
    world, rank = accelerator.num_processes, accelerator.process_index
    if accelerator.device.type == "cpu":
        torch.set_num_threads(p.num_threads or max(1, (os.cpu_count() or 1) // world))
    n = len(train_data)
    if p.batch_size % (world * p.grad_accum):
        raise TrainingError(f"pretrain.batch_size = {p.batch_size} must be divisible by processes ({world}) x "
                            f"pretrain.grad_accum ({p.grad_accum})")
    if n < p.batch_size:
        raise TrainingError(f"pretrain.batch_size = {p.batch_size} is larger than the training split "
                            f"({n} examples): lower it or use a larger corpus")
    steps_per_epoch = n // p.batch_size
    total = p.max_steps if p.max_steps is not None else max(1, int(p.epochs * steps_per_epoch))
    micro = p.batch_size // (world * p.grad_accum)
    grouped = isinstance(train_data, np.ndarray)
    nsp = train_pairs is not None and has_nsp_head(model)
    if has_nsp_head(model) and not nsp:
        raise TrainingError("the model has a next-sentence head but the data has no sentence pairs: set "
                            "tokenize_group.mode: sentence_pairs (or model.next_sentence: false)")
    crop = grouped and p.random_offsets and n > p.batch_size  # the last block has no successor to cut into
    if crop:
        n -= 1
    lengths = None if grouped or not p.group_by_length else Lengths([len(x) for x in train_data])

    model.to(accelerator.device)
    optimizer = make_optimizer(model, p, accelerator.device.type)
    ckpt = Checkpoints(checkpoint_dir, fingerprint_, p.keep_checkpoints)
    start = 0
    found = ckpt.latest()
    if found:
        start, d = found
        Checkpoints.load(d, model, optimizer)
        with open(d / "state.json", encoding="utf-8") as fh:
            resumed = json.load(fh)
        log.info("resuming from %s (step %d of %d)", d, start, total)
    bf16 = Bf16Weights(model) if pure else None
    wrapper = SparseMLM(bf16.work if pure else model, sparse=p.sparse_head)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    if p.compile:
        wrapper = torch.compile(wrapper)
    if start:  # the schedule continues at the resumed step (the checkpointed optimizer holds initial_lr)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", p.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(p, total), last_epoch=start - 1)

    val_masks = fixed_masks(val_data[:p.eval_blocks], masker, p.mlm_probability, seed=seed + 1,
                            pairs=val_pairs if nsp else None)
    hist = History(**resumed["history"]) if found and "history" in resumed else History()
    stop = _StopFlag()
    handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    main = accelerator.is_main_process
    bar = None
    if show_progress and main:
        from tqdm.auto import tqdm
        import sys
        bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)
    tokens_seen, train_time, window_loss, window_tokens, peak_rss = 0, 0.0, 0.0, 0, 0
    window_nsp, window_steps = 0.0, 0
    if found:  # the curves and totals cover the whole run, not only the part after the resume
        tokens_seen, train_time = resumed.get("tokens_seen", 0), resumed.get("train_time", 0.0)
    model.train()
    kernel = contextlib.ExitStack()
    kernel.enter_context(attention_kernel(p.attention_kernel, accelerator.device.type,
                                          bf16.work if pure else model))
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            idx = global_batches(n, p.batch_size, seed, step, lengths)
            g = generator(seed, step)
            if grouped:
                rows = crop_blocks(train_data, idx, seed, step) if crop else train_data[idx]
                ids, attn = torch.from_numpy(rows.astype(np.int64)), None
            else:
                ids, attn = pad_batch([train_data[i] for i in idx], pad_id)
            if nsp:
                types = pad_batch([train_pairs[0][i] for i in idx], 0)[0]
                nsp_y = torch.from_numpy(np.asarray(train_pairs[1])[idx])
            inputs, labels = masker(ids, p.mlm_probability, g)  # the whole global batch, on every rank
            count = int((labels != IGNORE).sum())
            torch.manual_seed(seed * 1_000_003 + step)  # dropout
            step_loss, step_nsp = 0.0, 0.0
            for k in range(p.grad_accum):
                lo = (rank * p.grad_accum + k) * micro
                sl = slice(lo, lo + micro)
                x, y = inputs[sl].to(accelerator.device), labels[sl].to(accelerator.device)
                a = None if attn is None else attn[sl].to(accelerator.device)
                extra = {"token_type_ids": types[sl].to(accelerator.device),
                         "nsp_labels": nsp_y[sl].to(accelerator.device)} if nsp else {}
                sync = accelerator.no_sync(wrapper) if k < p.grad_accum - 1 else contextlib.nullcontext()
                with sync:
                    loss_sum = wrapper(x, a, y, **extra)
                    if nsp:  # BERT's sum of the two means, each exact over the global batch
                        loss_sum, nsp_sum = loss_sum
                        accelerator.backward(loss_sum * (world / count) + nsp_sum * (world / p.batch_size))
                        step_nsp += nsp_sum.item()
                    else:
                        accelerator.backward(loss_sum * (world / count))  # exact mean over the global batch
                step_loss += loss_sum.item()
            if world > 1:  # the curve shows the loss of the whole global batch, not of rank 0's share
                sums = accelerator.reduce(torch.tensor([step_loss, step_nsp], device=accelerator.device), "sum")
                step_loss, step_nsp = float(sums[0]), float(sums[1])
            if pure:
                bf16.grads_to_master()
            if p.clip_norm:  # accelerate's clip also unscales fp16 gradients
                clip = torch.nn.utils.clip_grad_norm_ if pure else accelerator.clip_grad_norm_
                clip(model.parameters() if pure else wrapper.parameters(), p.clip_norm)
            optimizer.step()
            if pure:
                bf16.master_to_work()
            sched.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            real = int(ids.numel() if attn is None else attn.sum())
            tokens_seen += real
            train_time += dt
            window_loss += step_loss
            window_tokens += count
            window_nsp, window_steps = window_nsp + step_nsp, window_steps + 1
            done = step + 1
            if done % p.log_every == 0 or done == total:
                loss = window_loss / max(window_tokens, 1)
                tps = tokens_seen / max(train_time, 1e-9)
                row = {"step": done, "loss": round(loss, 5), "lr": sched.get_last_lr()[0]}
                if nsp:
                    row["nsp_loss"] = round(window_nsp / (window_steps * p.batch_size), 5)
                hist.train.append(row)
                if main:
                    log.info("step %d/%d loss %.4f lr %.2e tokens/s %.0f%s", done, total, loss,
                             sched.get_last_lr()[0], tps, f" nsp_loss {row['nsp_loss']:.4f}" if nsp else "")
                window_loss, window_tokens, window_nsp, window_steps = 0.0, 0, 0.0, 0
                peak_rss = max(peak_rss, _rss_mb())
            if done % p.eval_every == 0 or done == total:
                with accelerator.autocast():
                    v = validation_metrics(accelerator.unwrap_model(wrapper).model, val_masks, 64, pad_id)
                hist.val.append({"step": done, "val_loss": round(v["loss"], 5),
                                 "val_top1": round(v["top1_accuracy"], 5),
                                 **({"val_nsp_accuracy": round(v["nsp_accuracy"], 5)} if nsp else {})})
            if bar:
                bar.update(1)
                bar.set_postfix(refresh=False, loss=f"{step_loss / max(count, 1):.3f}",
                                tok_s=f"{tokens_seen / max(train_time, 1e-9):.0f}")
            if done % p.checkpoint_every == 0 and done < total and main:
                ckpt.save(done, model, optimizer, _progress(hist, tokens_seen, train_time))
            if stop.signal is not None and done < total:
                if main:
                    d = ckpt.save(done, model, optimizer, _progress(hist, tokens_seen, train_time))
                    log.warning("interrupted at step %d; checkpoint written to %s", done, d)
                accelerator.wait_for_everyone()
                raise Interrupted(f"pretrain interrupted by signal {stop.signal} at step {done}/{total}; "
                                  f"checkpoint saved in {checkpoint_dir}; rerun `dvc repro` to resume")
    finally:
        kernel.close()
        for s, h in handlers.items():
            signal.signal(s, h)
        if bar:
            bar.close()
    accelerator.wait_for_everyone()
    summary = {"steps": total, "resumed_from_step": start, "processes": world, "device": accelerator.device.type,
               "mixed_precision": precision, "train_tokens_seen": tokens_seen * world,
               "train_time_s": round(train_time, 2),
               "tokens_per_s": round(tokens_seen * world / max(train_time, 1e-9), 1),
               "step_time_ms": round(1000 * train_time / max(total - start, 1), 2),
               "peak_rss_mb": round(max(peak_rss, _rss_mb()), 1),
               "final_train_loss": hist.train[-1]["loss"] if hist.train else None,
               "final_val_loss": hist.val[-1]["val_loss"] if hist.val else None}
    if accelerator.device.type == "cuda":
        summary["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return model, hist, summary


def _progress(hist: History, tokens_seen: int, train_time: float) -> dict:
    return {"history": asdict(hist), "tokens_seen": tokens_seen, "train_time": train_time}


class _StopFlag:
    """Signal handler: the first SIGINT/SIGTERM asks for a clean stop after the step; a second one aborts."""

    def __init__(self):
        self.signal = None

    def __call__(self, sig, _frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = sig
        log.warning("signal %d: finishing the current step, then writing a checkpoint", sig)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
