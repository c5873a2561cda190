"""Time to quality: the Hugging Face Trainer recipe against our pretrain loop with our default configuration.

    .venv/bin/python bench/time_to_quality.py               # the recipe trains 600 s; ours its default run
    .venv/bin/python bench/time_to_quality.py --budget 120  # a quicker look

Both sides train on the same tokenizer and blocks (the default corpus through the library, BPE of the
default vocabulary size, block 128) and are evaluated on the same validation blocks with the same fixed
masks (``validation.fixed_masks`` with the evaluate stage's seed and passes), so their perplexities are
comparable. The recipe is ``bench/hf_recipe.py`` (RoBERTa 4 x 256, intermediate 1024, lr 5e-4, batch 32,
bf16, fused AdamW) and trains for ``--budget`` seconds of training time; ours is the model and pretrain
sections of params.yaml (ModernBERT, its schedule and steps).

Time is training time: a hook after every optimizer step (the same for both sides) evaluates the model at
fixed marks and stops the clock while it does. Each side runs in a fresh subprocess, one after the other.
The last line is ``hf_ppl=<p> hf_time_s=<t> ours_time_to_hf_ppl_s=<t'> speedup=<t/t'>``; the target is
a speedup of at least 5.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import worker
from common import SEED, StepClock, cpu_info, load_blocks, model_config, prepare_data, project_params


def marks(budget: float) -> list[float]:
    """Evaluation times: every 10 s for the first 2 minutes, then every 30 s, up to ``budget``."""
    out = [float(t) for t in range(10, 121, 10)] + [float(t) for t in range(150, int(budget) + 1, 30)]
    return [t for t in out if t < budget] + [budget]


class Clock(StepClock):
    """After every optimizer step: add the step's wall time to the training time; at each mark, evaluate
    (outside the training time) and record (train time, step, perplexity, top-1)."""

    def __init__(self, model, masks, pad_id: int, budget: float):
        self.model, self.masks, self.pad_id = model, masks, pad_id
        self.todo, self.rows, self.train_s, self.steps = marks(budget), [], 0.0, 0
        self.last = None
        self.done = False
        super().__init__()

    def start(self) -> None:
        self.last = time.perf_counter()

    def _hook(self, optimizer, args, kwargs):
        from mlmpipe.evaluation import masked_lm_eval

        now = time.perf_counter()
        self.train_s += now - (self.last if self.last is not None else now)
        self.steps += 1
        while self.todo and self.train_s >= self.todo[0]:
            self.todo.pop(0)
            out = masked_lm_eval(self.model, self.masks, 32, self.pad_id)
            self.rows.append({"train_s": round(self.train_s, 1), "step": self.steps,
                              "perplexity": round(out["perplexity"], 3), "top1": round(out["top1_accuracy"], 4)})
            print(f"  {self.train_s:7.1f} s  step {self.steps:5d}  perplexity {out['perplexity']:10.2f}  "
                  f"top-1 {out['top1_accuracy']:.3f}", flush=True)
        self.done = not self.todo
        self.last = time.perf_counter()  # the evaluation is not training time


def shared_masks(d: Path, tok):
    from mlmpipe import params as P
    from mlmpipe import validation
    from mlmpipe.masking import Masker

    ev = P.Evaluate()
    val = load_blocks(d, "validation")
    return validation.fixed_masks(val, Masker.from_tokenizer(tok), ev.mlm_probability, ev.seed, ev.passes)


def worker_hf(spec: dict) -> dict:
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    import hf_recipe

    torch.set_num_threads(spec["threads"])
    d = Path(spec["data"])
    tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
    model = hf_recipe.make_model(model_config(tok, spec["block"], (4, 256, 4, 1024)), seed=SEED)
    clock = Clock(model, shared_masks(d, tok), tok.pad_token_id, spec["budget"])

    class StopAtBudget(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if clock.last is None:
                clock.start()

        def on_step_end(self, args, state, control, **kw):
            control.should_training_stop = clock.done

    # A long run's schedule (as a user would set it for a real run), stopped at the budget.
    hf_recipe.train(model, tok, load_blocks(d, "train"), 10 ** 6, 32, use_cpu=True, bf16=True, seed=SEED,
                    callbacks=[StopAtBudget()])
    clock.close()
    return {"rows": clock.rows}


def worker_ours(spec: dict) -> dict:
    import dataclasses

    import torch

    from mlmpipe import model as M
    from mlmpipe import params as P
    from mlmpipe import tokenizer, training
    from mlmpipe.masking import Masker

    torch.set_num_threads(spec["threads"])
    d = Path(spec["data"])
    tok = tokenizer.load(str(d / "tokenizer"))
    raw = project_params()
    m, p = P.section(raw, "model"), P.section(raw, "pretrain")
    p = dataclasses.replace(p, num_threads=spec["threads"], eval_every=10 ** 9, checkpoint_every=10 ** 9,
                            log_every=10 ** 9, **({"max_steps": spec["steps"]} if spec["steps"] else {}))
    model = M.build_scratch(m, tok, spec["block"], raw["seed"])
    clock = Clock(model, shared_masks(d, tok), tok.pad_token_id, spec["budget"])
    clock.start()
    with tempfile.TemporaryDirectory(prefix="ttq_ckpt_") as ck:
        model, _, summary = training.train(model, load_blocks(d, "train"), load_blocks(d, "validation"),
                                           Masker.from_tokenizer(tok, whole_word=p.whole_word), p, raw["seed"],
                                           tok.pad_token_id, ck, "ttq", show_progress=False)
    clock.close()
    from mlmpipe.evaluation import masked_lm_eval

    out = masked_lm_eval(model, shared_masks(d, tok), 32, tok.pad_token_id)
    clock.rows.append({"train_s": round(clock.train_s, 1), "step": clock.steps,
                       "perplexity": round(out["perplexity"], 3), "top1": round(out["top1_accuracy"], 4)})
    return {"rows": clock.rows, "steps": p.max_steps, "mixed_precision": summary["mixed_precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds of the HF recipe")
    ap.add_argument("--ours-steps", type=int, default=0, help="our max_steps (0: params.yaml's)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all CPUs)")
    ap.add_argument("--data", type=Path, default=None, help="cache directory for the prepared data")
    worker.add_args(ap, ("ours", "hf"))
    a = ap.parse_args()
    if worker.serve(a, {"ours": worker_ours, "hf": worker_hf}):
        return
    sys.stdout.reconfigure(line_buffering=True)
    raw = project_params()
    vocab, block = raw["train_tokenizer"]["vocab_size"], raw["tokenize_group"]["block_size"]
    tmp = None if a.data else tempfile.TemporaryDirectory(prefix="ttq_data_")
    d = a.data or Path(tmp.name)
    meta = prepare_data(d, vocab, block)
    threads = a.threads or os.cpu_count() or 1
    print(f"# time to quality  {time.strftime('%Y-%m-%d %H:%M:%S')}  {cpu_info()}; threads {threads}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"data: {meta['train_blocks']} train / {meta['validation_blocks']} validation blocks of {block}, "
          f"BPE vocab {meta['vocab_size']}; both sides evaluated on the same fixed masks")
    spec = {"data": str(d), "block": block, "threads": threads, "budget": a.budget, "steps": a.ours_steps}
    print(f"HF recipe (RoBERTa 4x256, lr 5e-4, bf16), {a.budget:.0f} s of training:")
    hf = worker.run(__file__, "hf", spec, capture=False)["rows"]
    print(f"ours (params.yaml: {raw['model']['family']} {raw['model']['layers']}x{raw['model']['hidden']}, "
          f"lr {raw['pretrain']['lr']}, {a.ours_steps or raw['pretrain']['max_steps']} steps):")
    ours = worker.run(__file__, "ours", {**spec, "budget": 10 ** 6}, capture=False)["rows"]
    target = hf[-1]["perplexity"]
    reach = next((r for r in ours if r["perplexity"] <= target), None)
    t = reach["train_s"] if reach else math.inf
    print(f"the recipe's perplexity after {hf[-1]['train_s']:.0f} s: {target:.2f} (top-1 {hf[-1]['top1']:.3f}); "
          f"ours reaches it by {t:.0f} s (first evaluation mark at or below it); ours at the end: "
          f"{ours[-1]['perplexity']:.2f} after {ours[-1]['train_s']:.0f} s (top-1 {ours[-1]['top1']:.3f})")
    print(f"hf_ppl={target:.2f} hf_time_s={hf[-1]['train_s']:.0f} ours_time_to_hf_ppl_s={t:.0f} "
          f"speedup={hf[-1]['train_s'] / t:.1f}")


if __name__ == "__main__":
    main()
