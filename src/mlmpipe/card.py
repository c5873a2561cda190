"""The model card published with the trained model: a Hugging Face `README.md` whose metadata (library,
pipeline tag, base model, held-out results as `model-index`) the Hub reads, and whose text says what the model
is, how it was made and how it does on the cloze prompts.

Functions take values (the stages' records and params) and return the card's text; `fill_mask_report` writes it
into the publishable folder beside a copy of the model.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TASK = {"task_type": "fill-mask", "task_name": "Masked language modeling"}


def eval_results(corpus_source: str, dataset_id: Optional[str], record: Mapping[str, Any]) -> list[EvalResult]:
    """Held-out perplexity and masked-token top-1 / top-5 accuracy as `model-index` entries."""
    where = {"dataset_type": dataset_id or "text", "dataset_name": corpus_source, "dataset_split": "validation"}
    return [
        EvalResult(**TASK, **where, metric_type="perplexity", metric_name="Perplexity (masked tokens)",
                   metric_value=round(record["perplexity"], 4)),
        EvalResult(**TASK, **where, metric_type="accuracy", metric_config="top1",
                   metric_name="Top-1 accuracy (masked tokens)", metric_value=round(record["top1_accuracy"], 4)),
        EvalResult(**TASK, **where, metric_type="accuracy", metric_config="top5",
                   metric_name="Top-5 accuracy (masked tokens)", metric_value=round(record["top5_accuracy"], 4)),
    ]


def model_card(*, name: str, license: Optional[str], language: Optional[str], model: Mapping[str, Any],
               corpus: Mapping[str, Any], evaluation: Mapping[str, Any], fill_mask: Mapping[str, Any],
               training: Mapping[str, Any]) -> str:
    """The card's text. ``model``, ``corpus``, ``evaluation`` and ``fill_mask`` are the stages' detail records
    (metrics/details/*.json); ``training`` is the pretrain params section as the run used it."""
    base = model.get("checkpoint") if model.get("init") == "pretrained" else None
    source = corpus["source"]
    dataset_id = source[3:] if source.startswith("hf:") else None
    data = ModelCardData(
        model_name=name, license=license, language=language, library_name="transformers",
        pipeline_tag="fill-mask", base_model=base, datasets=[dataset_id] if dataset_id else None,
        tags=["mlmpipe", "masked-lm", model["family"]],
        eval_results=eval_results(source, dataset_id, evaluation))
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(_body(name, base, model, corpus, evaluation, fill_mask,
                                                              training))
    return str(ModelCard(text))  # parses the metadata back: a card the Hub cannot read fails here, not there


def _body(name: str, base: Optional[str], model: Mapping, corpus: Mapping, evaluation: Mapping,
          fill_mask: Mapping, training: Mapping) -> list[str]:
    commit = model.get("resolved_commit")  # the Hub commit loaded (build_model.revision), when a Hub id
    made = (f"adapted from `{base}`" + (f" (commit `{commit[:12]}`)" if commit else "")) if base else \
        "pretrained from scratch"
    lines = [f"# {name}", "",
             f"A {model['family']} masked language model (`{model['architecture']}`, "
             f"{model['params_total']:,} parameters, {model['layers']} layers, hidden size {model['hidden']}), "
             f"{made} on `{corpus['source']}` ({corpus['train_documents']:,} training documents) with "
             "mlmpipe, a DVC pipeline (`dvc repro`).", "",
             "## Use", "", "```python", "from transformers import pipeline", "",
             f'fill = pipeline("fill-mask", model="{name}")  # or the folder this card is in',
             f'fill("{_example(fill_mask)}")', "```", "",
             "## Held-out results", "",
             f"On the validation split ({evaluation['masked_tokens']:,} masked tokens, fixed masks):", "",
             "| metric | this model |" + (" before training |" if "before_perplexity" in evaluation else ""),
             "|---|---|" + ("---|" if "before_perplexity" in evaluation else "")]
    for label, key, fmt in (("perplexity", "perplexity", "{:.2f}"), ("top-1 accuracy", "top1_accuracy", "{:.1%}"),
                            ("top-5 accuracy", "top5_accuracy", "{:.1%}")):
        before = evaluation.get(f"before_{key}")
        lines.append(f"| {label} | {fmt.format(evaluation[key])} |"
                     + (f" {fmt.format(before)} |" if before is not None else ""))
    lines += ["", *_examples(fill_mask), "", "## Training", "",
              "The `pretrain` parameters of the run (mlmpipe's `params.yaml`):", "", "```json",
              json.dumps(dict(training), indent=1, sort_keys=True), "```", ""]
    return lines


def _example(fill_mask: Mapping) -> str:
    rows = fill_mask.get("results") or []
    text = rows[0]["text"] if rows else "Hello <mask>."
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _examples(fill_mask: Mapping) -> list[str]:
    rows = fill_mask.get("results") or []
    if not rows:
        return []
    k = fill_mask["top_k"]
    lines = ["## Fill-mask examples", ""]
    if fill_mask.get("prompts_with_answers"):
        lines += [f"Cloze prompts with expected answers: top-1 {fill_mask['cloze_top1']:.0%}, "
                  f"top-{k} {fill_mask['cloze_topk']:.0%}.", ""]
    lines += [f"| prompt | expected | top {k} |", "|---|---|---|"]
    for r in rows:
        preds = ", ".join(f"`{p['token']}`" for p in r["predictions"])
        lines.append(f"| {_cell(r['text'])} | {', '.join(r['answers']) or '—'} | {preds} |")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
