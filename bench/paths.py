"""Per-token speed of the data paths of our pretrain loop: group (the default), whole-word masking, and
line_by_line (one example per document, padded per batch; batches grouped by length, as
``pretrain.group_by_length`` defaults to; ``line_by_line_unsorted`` is the same with it off, for reference).

    .venv/bin/python bench/paths.py                       # params.yaml's model and pretrain, 10 + 40 steps, 3 rounds
    .venv/bin/python bench/paths.py --steps 20 --rounds 1 # a quicker look

Target (issue 5): the whole-word and line_by_line paths are no slower per token than 1.2x the default
path. Data: the default corpus through the library (BPE of params.yaml's vocabulary size, block
``tokenize_group.block_size``), tokenized once in ``group`` and once in ``line_by_line`` mode. Model and
training: the ``model`` and ``pretrain`` sections of params.yaml, with ``max_steps`` = warm-up + timed
steps (evaluation and checkpoints pushed past the end). Every run is a fresh subprocess; the rounds
alternate the paths. A step is timed from the end of the previous optimizer step to the end of its own
(the same global ``torch.optim`` hook as speed.py); its tokens are the real (non-padding) tokens of its
batch, so padding counts as cost, not as work. Last line:
``group_tok_s=<n> whole_word_tok_s=<n> line_by_line_tok_s=<n> whole_word_x=<t> line_by_line_x=<t>`` where
``x`` = time per token relative to ``group`` (target <= 1.2).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import worker
from common import SEED, StepClock, cpu_info, load_blocks, prepare_data, project_params, step_times

PATHS = ("group", "whole_word", "line_by_line", "line_by_line_unsorted")


def measure(spec: dict) -> dict:
    from mlmpipe import model as M
    from mlmpipe import params as P
    from mlmpipe import tokenizer, training
    from mlmpipe.batches import Batches
    from mlmpipe.masking import Masker

    raw = project_params()
    d, path = Path(spec["data"]), spec["path"]
    tok = tokenizer.load(str(d / "tokenizer"))
    mode = "line_by_line" if path.startswith("line_by_line") else "group"
    train_data, val_data = load_blocks(d, "train", mode), load_blocks(d, "validation", mode)
    total = spec["warmup"] + spec["steps"]
    p = P.parse(P.Pretrain, "pretrain", {**raw["pretrain"], "max_steps": total, "epochs": None,
                                         "whole_word": path == "whole_word", "log_every": 10,
                                         "group_by_length": path != "line_by_line_unsorted",
                                         "eval_every": 10 ** 9, "checkpoint_every": 10 ** 9})
    model = M.build_scratch(P.parse(P.Model, "model", raw["model"]), tok, spec["block"], seed=SEED)
    ckpt = tempfile.mkdtemp(prefix="bench_paths_")
    masker = Masker.from_tokenizer(tok, whole_word=p.whole_word)
    clock = StepClock(False)
    try:
        training.train(model, train_data, val_data, masker, p, SEED, tok.pad_token_id, ckpt, "bench",
                       show_progress=False)
    finally:
        clock.close()
    timed = sum(step_times(clock.ends, spec["warmup"], total))
    real, padded = padding(Batches(train_data, masker, p, SEED, tok.pad_token_id), spec["warmup"], total)
    return {"tok_s": real / timed, "padding": 1 - real / padded, "step_ms": 1000 * timed / spec["steps"],
            "examples": len(train_data)}


def padding(batches, first: int, end: int) -> tuple[int, int]:
    """(real, padded) tokens of steps ``first`` to ``end`` - 1: the loop's own batches (``Batches.at``)."""
    real, padded = 0, 0
    for step in range(first, end):
        b = batches.at(step)
        real += b.tokens
        padded += b.inputs.numel()
    return real, padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    worker.add_args(ap, ("path",))
    a = ap.parse_args()
    if worker.serve(a, {"path": measure}):
        return
    if a.steps < 1 or a.warmup < 1 or a.rounds < 1:
        ap.error("--steps, --warmup and --rounds must be >= 1")
    raw = project_params()
    block, vocab = raw["tokenize_group"]["block_size"], raw["train_tokenizer"]["vocab_size"]
    print(f"# data paths benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  {cpu_info()}; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"model {raw['model'].get('family')} from params.yaml, block {block}, batch "
          f"{raw['pretrain'].get('batch_size')}, {a.warmup} + {a.steps} steps per run, {a.rounds} rounds")
    results: dict[str, list] = {k: [] for k in PATHS}
    with tempfile.TemporaryDirectory(prefix="bench_paths_data_") as t:
        data = Path(t) / "data"
        prepare_data(data, vocab, block, modes=("group", "line_by_line"))
        for rnd in range(a.rounds):
            for path in PATHS:
                spec = {"data": str(data), "path": path, "block": block, "steps": a.steps, "warmup": a.warmup}
                r = worker.run(__file__, "path", spec, path)
                results[path].append(r)
                print(f"round {rnd + 1} {path:<22} {r['tok_s']:8.0f} real tok/s  step {r['step_ms']:6.1f} ms  "
                      f"padding {100 * r['padding']:4.1f} %  ({r['examples']} examples)", flush=True)
    med = {k: statistics.median(r["tok_s"] for r in v) for k, v in results.items()}
    for k in PATHS:
        ts = [r["tok_s"] for r in results[k]]
        print(f"{k:<22} median {med[k]:8.0f} real tok/s (spread {min(ts):.0f}-{max(ts):.0f}); time per token "
              f"{med['group'] / med[k]:.2f} x group (target <= 1.2)")
    print(f"group_tok_s={med['group']:.0f} whole_word_tok_s={med['whole_word']:.0f} "
          f"line_by_line_tok_s={med['line_by_line']:.0f} whole_word_x={med['group'] / med['whole_word']:.2f} "
          f"line_by_line_x={med['group'] / med['line_by_line']:.2f} "
          f"line_by_line_unsorted_x={med['group'] / med['line_by_line_unsorted']:.2f}")


if __name__ == "__main__":
    main()
