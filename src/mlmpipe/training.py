"""The pretraining loop, on accelerate: the same code on CPU, one GPU, or many under ``accelerate launch``.

Everything random is a pure function of (seed, step): the batch, its masks, dropout. So a run resumed from a
checkpoint continues exactly as an uninterrupted one, and the global batch (``batch_size`` sequences per
optimizer step) is the same whatever the number of processes.

The parts, each readable on its own: ``batches.Batches.at`` (what step n trains on), ``compute.Precision``
(how a precision mode does backward, clip and step), ``_ready`` with ``Progress`` (the model, optimizer and
what a checkpoint restores, sharded by ``pretrain.fsdp`` or not), ``forward_backward`` (one step's gradients);
``train`` is the loop that calls them and the curve, validation, checkpoint and stop hooks.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time

import torch
from accelerate.utils import DistributedType

from . import sharding
from .batches import Batch, Batches
from .checkpoints import Checkpoints, Found
from .compute import Precision, SparseMLM, attention_kernel, make_optimizer
from .masking import Masker
from .model import has_nsp_head
from .params import MlmpipeError, Pretrain
from .progress import History, Progress, Window
from .validation import fixed_masks, validation_metrics

log = logging.getLogger(__name__)


class TrainingError(MlmpipeError):
    pass


class Interrupted(MlmpipeError):
    pass


def schedule(p: Pretrain, total: int):
    def factor(step: int) -> float:
        if step < p.warmup_steps:
            return (step + 1) / p.warmup_steps
        if p.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - p.warmup_steps) / max(1, total - p.warmup_steps))
        return 1 - frac if p.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
    return factor


def train(model, train_data, val_data, masker: Masker, p: Pretrain, seed: int, pad_id: int, checkpoint_dir: str,
          fingerprint_: str, show_progress: bool = True, train_pairs=None, val_pairs=None, live=None
          ) -> tuple[object, History, dict]:
    """Train ``model`` in place; returns the unwrapped model, the curves and summary metrics.

    ``train_pairs``/``val_pairs``: (segment ids, next-sentence labels) of sentence-pair data; a model with a
    next-sentence head (BertForPreTraining) then also learns that objective, loss = MLM mean + NSP mean.
    ``live``: makes a ``live.LiveMetrics`` (called on the main process only, once accelerate knows which that
    is), told every row of the curves as the run goes and the whole history at the end."""
    precision = Precision(p.mixed_precision, sharded=p.fsdp)
    acc = precision.accelerator
    if acc.device.type == "cpu":
        torch.set_num_threads(p.num_threads or max(1, (os.cpu_count() or 1) // acc.num_processes))
    nsp = _check(model, p, len(train_data), acc, train_pairs)
    batches = Batches(train_data, masker, p, seed, pad_id, pairs=train_pairs if nsp else None)
    total = p.max_steps if p.max_steps is not None else max(1, int(p.epochs * batches.steps_per_epoch))

    ckpt = Checkpoints(checkpoint_dir, fingerprint_, p.keep_checkpoints, resume_other_code=p.resume_other_code)
    wrapper, optimizer, found = _ready(model, p, precision, ckpt)
    start, progress = (found.step if found else 0), Progress.restored(found)
    if found:
        log.info("resuming from %s (step %d of %d)", found.dir, start, total)
    compute = acc.unwrap_model(wrapper).model  # what the forward runs on: the model, or bf16-pure's copy of it
    if p.compile:
        wrapper = torch.compile(wrapper)
    sched = _scheduler(optimizer, p, total, start)
    val_masks = fixed_masks(val_data[:p.eval_blocks], masker, p.mlm_probability, seed=seed + 1,
                            pairs=val_pairs if nsp else None)

    main, peak_rss = acc.is_main_process, 0.0
    watcher = live() if live is not None and main else None
    model.train()
    with (_StopFlag() as stop, _progress_bar(show_progress and main, total, start) as bar,
          attention_kernel(p.attention_kernel, acc.device.type, compute)):
        for step in range(start, total):
            t0 = time.perf_counter()
            batch = batches.at(step)
            torch.manual_seed(seed * 1_000_003 + step)  # dropout
            loss, nsp_loss = forward_backward(wrapper, precision, batch, p)
            precision.step(optimizer, model, wrapper, p.clip_norm)
            sched.step()
            optimizer.zero_grad(set_to_none=True)
            progress.train_time += time.perf_counter() - t0
            progress.tokens_seen += batch.tokens
            progress.window.add(loss, nsp_loss, batch.masked)
            done = step + 1

            if done % p.log_every == 0 or done == total:  # a row of the training curve
                row = progress.window.row(done, sched.get_last_lr()[0], p.batch_size if nsp else None)
                progress.history.train.append(row)
                if main:
                    _log_row(progress.window, row, total, progress.tokens_per_s(acc.num_processes))
                if watcher is not None:
                    watcher.train_row(row, progress.tokens_per_s(acc.num_processes), progress.history)
                progress.window, peak_rss = Window(), max(peak_rss, _rss_mb())
            if done % p.eval_every == 0 or done == total:  # a row of the validation curve
                progress.history.val.append(_val_row(done, wrapper, compute, val_masks, p, pad_id, acc, nsp))
                if p.keep_best and progress.best_val()["step"] == done:  # a new lowest validation loss
                    progress.best = sharding.model_state(model)
                if watcher is not None:
                    watcher.val_row(progress.history.val[-1], progress.history)
            if bar:
                bar.update(1)
                bar.set_postfix(refresh=False, loss=f"{loss / max(batch.masked, 1):.3f}",
                                tok_s=f"{progress.tokens_per_s(acc.num_processes):.0f}")
            if done % p.checkpoint_every == 0 and done < total:
                ckpt.save(done, model, optimizer, progress.state(), progress.best, acc.scaler, main)
            if stop.signal is not None and done < total:  # SIGINT/SIGTERM: a checkpoint, then stop
                d = ckpt.save(done, model, optimizer, progress.state(), progress.best, acc.scaler, main)
                if main:
                    log.warning("interrupted at step %d; checkpoint written to %s", done, d)
                acc.wait_for_everyone()
                raise Interrupted(f"pretrain interrupted by signal {stop.signal} at step {done}/{total}; "
                                  f"checkpoint saved in {checkpoint_dir}; rerun `dvc repro` to resume")
    acc.wait_for_everyone()
    if watcher is not None:
        watcher.end(progress.history)  # the whole curves, and DVCLive's summary without timings
    model, saved = _final_model(model, progress, p, total, main)
    return model, progress.history, _summary(progress, total, start, precision, max(peak_rss, _rss_mb()), saved)


def _val_row(done: int, wrapper, compute, val_masks, p: Pretrain, pad_id: int, acc, nsp: bool) -> dict:
    """The validation curve's row at step ``done``: the held-out pass over the fixed masks, all ``eval_blocks``
    examples in one batch (a sharded model's root weights gathered for it)."""
    with acc.autocast(), sharding.gathered(wrapper):
        v = validation_metrics(compute, val_masks, p.eval_blocks, pad_id)
    return {"step": done, "val_loss": round(v["loss"], 5), "val_top1": round(v["top1_accuracy"], 5),
            **({"val_nsp_accuracy": round(v["nsp_accuracy"], 5)} if nsp else {})}


def _final_model(model, progress: Progress, p: Pretrain, total: int, main: bool) -> tuple[object, int]:
    """The model to save and the step whose weights it holds: the last step's, or with ``keep_best`` the
    lowest validation loss's; after a sharded run, a standard model of the whole weights (gathered on every
    process, built on the main one)."""
    saved, weights = total, None
    if p.keep_best and progress.best is not None:
        saved, weights = progress.best_val()["step"], progress.best
        log.info("keep_best: the saved model is step %d's (validation loss %.4f), not step %d's",
                 saved, progress.best_val()["val_loss"], total)
    if sharding.is_sharded(model):
        weights = sharding.model_state(model) if weights is None else weights
        model = sharding.plain_copy(model, weights) if main else model
    elif weights is not None:
        model.load_state_dict(weights, strict=True)
    return model, saved


def _ready(model, p: Pretrain, precision: Precision, ckpt: Checkpoints) -> tuple[object, object, Found | None]:
    """The training wrapper (``SparseMLM``, prepared by accelerate) and optimizer, with the newest matching
    checkpoint, if any, restored into them. ``pretrain.fsdp`` over several processes shards the model first,
    so the optimizer and the restored states hold shards, and accelerate prepares only the optimizer (FSDP
    already splits the work; DDP must not wrap it)."""
    acc = precision.accelerator
    model.to(acc.device)
    shard = p.fsdp and acc.num_processes > 1
    if shard:
        wrapper = SparseMLM(model, sparse=p.sparse_head)
        sharding.shard(wrapper, model)
        if acc.is_main_process:
            log.info("FSDP2: the weights of %d tensors sharded over %d processes", sharding.count_sharded(model),
                     acc.num_processes)
    optimizer = make_optimizer(model, p, acc.device.type)
    found = _agreed(ckpt.newest(), acc, ckpt.root)
    if found:
        for g in optimizer.param_groups:  # the checkpointed groups hold the key LambdaLR adds; loading matches keys
            g.setdefault("initial_lr", p.lr)
        ckpt.load(found.dir, model, optimizer)
    if shard:
        optimizer = acc.prepare(optimizer)
    else:  # after the restore: bf16-pure copies the restored weights
        wrapper, optimizer = acc.prepare(SparseMLM(precision.compute_model(model), sparse=p.sparse_head), optimizer)
    if found and acc.scaler is not None:  # fp16: continue with the scale the interrupted run had reached
        Checkpoints.load_scaler(found.dir, acc.scaler)
    return wrapper, optimizer, found


def _agreed(found: Found | None, acc, root) -> Found | None:
    """``found``, once every process has found the same step to resume (each reads the checkpoint files)."""
    if acc.num_processes > 1:
        steps = acc.gather(torch.tensor([found.step if found else 0], device=acc.device)).tolist()
        if len(set(steps)) > 1:
            raise TrainingError(f"the processes found different checkpoints to resume in {root} (steps {steps}, "
                                f"by process): every node must read the same checkpoint directory (put "
                                f"paths.checkpoints or $MLMPIPE_CHECKPOINTS on storage all nodes share)")
    return found


def _check(model, p: Pretrain, n: int, acc, train_pairs) -> bool:
    """Refuse sizes and data the run cannot train on; returns whether it learns next-sentence prediction."""
    world = acc.num_processes
    if p.batch_size % (world * p.grad_accum):
        raise TrainingError(f"pretrain.batch_size = {p.batch_size} must be divisible by processes ({world}) x "
                            f"pretrain.grad_accum ({p.grad_accum})")
    if n < p.batch_size:
        raise TrainingError(f"pretrain.batch_size = {p.batch_size} is larger than the training split "
                            f"({n} examples): lower it or use a larger corpus")
    if acc.distributed_type == DistributedType.FSDP:
        raise TrainingError("accelerate's own FSDP (--use_fsdp or an FSDP accelerate config) is not used: set "
                            "pretrain.fsdp: true and launch without it (mlmpipe shards the model itself)")
    if has_nsp_head(model) and train_pairs is None:
        raise TrainingError("the model has a next-sentence head but the data has no sentence pairs: set "
                            "tokenize_group.mode: sentence_pairs (or model.next_sentence: false)")
    return train_pairs is not None and has_nsp_head(model)


def _scheduler(optimizer, p: Pretrain, total: int, start: int):
    """The learning-rate schedule, at step ``start`` (a resumed run continues it: the checkpointed optimizer
    holds initial_lr, which LambdaLR needs to start past step 0)."""
    if start:
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", p.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(p, total), last_epoch=start - 1)


def forward_backward(wrapper, precision: Precision, batch: Batch, p: Pretrain) -> tuple[float, float]:
    """This process's rows of the global batch, forward and backward in ``grad_accum`` micro-batches. Each loss
    is scaled so that the gradients sum to the exact mean over the global batch: over its masked tokens, and
    for a next-sentence head BERT's sum of the MLM mean and the NSP mean over examples. Returns the loss sums
    (MLM, NSP) of the whole global batch."""
    acc = precision.accelerator
    world, rank = acc.num_processes, acc.process_index
    micro = p.batch_size // (world * p.grad_accum)
    mlm, nsp = 0.0, 0.0
    for k in range(p.grad_accum):
        x, attention, y, extra = batch.rows((rank * p.grad_accum + k) * micro, micro, acc.device)
        with acc.no_sync(wrapper) if k < p.grad_accum - 1 else contextlib.nullcontext():
            loss_sum = wrapper(x, attention, y, **extra)
            if batch.nsp_labels is not None:
                loss_sum, nsp_sum = loss_sum
                precision.backward(loss_sum * (world / batch.masked) + nsp_sum * (world / p.batch_size))
                nsp += nsp_sum.item()
            else:
                precision.backward(loss_sum * (world / batch.masked))
        mlm += loss_sum.item()
    if world > 1:  # the curve shows the loss of the whole global batch, not of this process's share
        sums = acc.reduce(torch.tensor([mlm, nsp], device=acc.device), "sum")
        mlm, nsp = float(sums[0]), float(sums[1])
    return mlm, nsp


def _log_row(window: Window, row: dict, total: int, tokens_per_s: float) -> None:
    log.info("step %d/%d loss %.4f lr %.2e tokens/s %.0f%s", row["step"], total, window.mean_loss(), row["lr"],
             tokens_per_s, f" nsp_loss {row['nsp_loss']:.4f}" if "nsp_loss" in row else "")


def _summary(progress: Progress, total: int, start: int, precision: Precision, peak_rss: float,
             saved: int) -> dict:
    acc, hist, best = precision.accelerator, progress.history, progress.best_val()
    world, tokens, seconds = acc.num_processes, progress.tokens_seen, progress.train_time
    summary = {"steps": total, "resumed_from_step": start, "processes": world, "device": acc.device.type,
               "mixed_precision": precision.name, "train_tokens_seen": tokens * world,
               "train_time_s": round(seconds, 2),
               "tokens_per_s": round(progress.tokens_per_s(world), 1),
               "step_time_ms": round(1000 * seconds / max(total - start, 1), 2),
               "peak_rss_mb": round(peak_rss, 1),
               "final_train_loss": hist.train[-1]["loss"] if hist.train else None,
               "final_val_loss": hist.val[-1]["val_loss"] if hist.val else None,
               "best_val_step": best["step"] if best else None,
               "best_val_loss": best["val_loss"] if best else None,
               "saved_step": saved}  # whose weights are saved: the last step's, or with keep_best the best's
    if acc.device.type == "cuda":
        summary["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return summary


class _StopFlag:
    """Signal handler while the loop runs: the first SIGINT/SIGTERM asks for a clean stop after the step
    (``signal`` set); a second one aborts. The previous handlers are restored on exit."""

    def __init__(self):
        self.signal = None

    def __call__(self, sig, _frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = sig
        log.warning("signal %d: finishing the current step, then writing a checkpoint", sig)

    def __enter__(self) -> "_StopFlag":
        self.handlers = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.handlers.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, start: int):
    if not show:
        yield None
        return
    import sys

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    try:
        yield bar
    finally:
        bar.close()


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
