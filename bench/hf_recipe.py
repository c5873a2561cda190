"""The classic Hugging Face masked-LM recipe, as the blog post / course / ``run_mlm.py`` write it.

``RobertaConfig`` + ``RobertaForMaskedLM`` from config, ``DataCollatorForLanguageModeling`` at
``mlm_probability=0.15``, and ``Trainer`` with ``TrainingArguments`` on ``group_texts`` blocks. The
recipe is followed as written, with its own best speed settings: bf16 autocast and fused AdamW.
It is used by ``bench/speed.py`` as the baseline our pretrain step loop is compared with.

Differences from our loop that belong to the recipe and are kept on purpose: dropout 0.1 (the
RobertaConfig default), the MLM head (vocabulary projection) over every position, and the
collator's masking on the main process.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


def blocks_dataset(blocks: np.ndarray, tokenizer):
    """A ``datasets.Dataset`` with the columns ``run_mlm.py``'s ``group_texts`` leaves after tokenizing with
    ``return_special_tokens_mask=True``: input_ids, attention_mask, special_tokens_mask. Built from the blocks
    mlmpipe's grouping made (concatenate documents, cut into ``block_size`` chunks: the same thing
    ``group_texts`` does), so both sides train on identical blocks."""
    import datasets

    special = np.zeros(max(len(tokenizer), max(tokenizer.all_special_ids) + 1), dtype=np.int8)
    special[tokenizer.all_special_ids] = 1
    ids = blocks.astype(np.int32)
    return datasets.Dataset.from_dict({
        "input_ids": ids.tolist(),
        "attention_mask": np.ones_like(ids, dtype=np.int8).tolist(),
        "special_tokens_mask": special[ids].tolist(),
    })


def make_model(config, seed: int = 42):
    """``RobertaForMaskedLM`` from a ``RobertaConfig`` (``common.model_config``: max_position_embeddings = block + 2,
    type_vocab_size = 1, dropout 0.1 unless given), as in "How to train a new language model from scratch"."""
    import torch
    from transformers import RobertaForMaskedLM

    torch.manual_seed(seed)
    return RobertaForMaskedLM(config)


def step_timer_callback():
    """A TrainerCallback recording wall time at every on_step_begin / on_step_end (synchronizing CUDA): the
    compute-only time of a step, without fetching and collating its batch (``common.StepClock`` times whole
    steps)."""
    from transformers import TrainerCallback

    from common import now

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_train_begin(self, args, state, control, **kw):
            self.train_begin = now(args.device.type == "cuda")

        def on_step_begin(self, args, state, control, **kw):
            self.begin.append(now(args.device.type == "cuda"))

        def on_step_end(self, args, state, control, **kw):
            self.end.append(now(args.device.type == "cuda"))

    return StepTimer()


def train(model, tokenizer, blocks: np.ndarray, steps: int, batch_size: int, use_cpu: bool, bf16: bool = True,
          optim: str = "adamw_torch_fused", num_workers: int = 0, lr: float = 5e-4, seed: int = 42,
          output_dir: str | None = None, callbacks: list | None = None):
    """Run ``Trainer.train()`` for ``steps`` optimizer steps; returns (TrainOutput, StepTimer)."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=True, mlm_probability=0.15)
    output_dir = output_dir or tempfile.mkdtemp(prefix="hf_recipe_")
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=lr,
        weight_decay=0.01,
        warmup_steps=0,
        bf16=bf16,
        optim=optim,
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=use_cpu,
        dataloader_num_workers=num_workers,
        dataloader_pin_memory=not use_cpu,
        dataloader_drop_last=True,
        # Keep special_tokens_mask for the collator (the default True would drop it, not being a forward argument,
        # and the collator would recompute it row by row in Python).
        remove_unused_columns=False,
        seed=seed,
    )
    timer = step_timer_callback()
    trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=blocks_dataset(blocks, tokenizer),
                      processing_class=tokenizer, callbacks=[timer, *(callbacks or [])])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = trainer.train()
    return out, timer
