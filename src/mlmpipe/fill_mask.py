"""Fill-mask report: top-k predictions for prompts through ``transformers.pipeline("fill-mask")``.

Prompts write the mask as a tokenizer-neutral ``<mask>``, mapped to the tokenizer's own mask token.
Prompts with expected answers give a cloze accuracy (top-1 and top-k).
"""
from __future__ import annotations

import logging

from transformers import pipeline

from .families import FAMILIES
from .params import MlmpipeError

log = logging.getLogger(__name__)


class FillMaskError(MlmpipeError):
    pass


def max_positions(config) -> int | None:
    """How many tokens (specials included) the model's position embeddings take; None if unbounded."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    family = FAMILIES.get(config.model_type)
    return positions - (family.position_offset if family else 0)  # RoBERTa's start at padding_idx + 1


def _norm(text: str, lowercase: bool) -> str:
    text = text.strip()
    return text.lower() if lowercase else text


def single_token(tok, answer: str) -> bool:
    """Whether ``answer`` can be produced by one mask (as a word after a space, or glued to punctuation)."""
    variants = (" " + answer, answer)
    ids = [tok(v, add_special_tokens=False)["input_ids"] for v in variants]
    return any(len(x) == 1 and x[0] != tok.unk_token_id for x in ids)  # [UNK] never predicts the answer


def run_prompts(model_dir: str, prompts, top_k: int) -> list[dict]:
    fill = pipeline("fill-mask", model=model_dir, tokenizer=model_dir, device="cpu", top_k=top_k)
    tok = fill.tokenizer
    lowercase = bool(tok("A", add_special_tokens=False)["input_ids"] == tok("a", add_special_tokens=False)["input_ids"])
    limit = max_positions(fill.model.config)
    rows = []
    for i, pr in enumerate(prompts):
        text = pr.text.replace("<mask>", tok.mask_token)
        n = len(tok(text)["input_ids"])
        if limit is not None and n > limit:
            raise FillMaskError(f"fill_mask_report.prompts[{i}].text = {pr.text!r}: {n} tokens, more than the "
                                f"model's {limit} positions; shorten the prompt")
        preds = fill(text)
        predictions = [{"token": d["token_str"].strip(), "prob": round(float(d["score"]), 4)} for d in preds]
        answers = [_norm(a, lowercase) for a in pr.answers]
        ranked = [_norm(d["token"], lowercase) for d in predictions]
        rank = next((i + 1 for i, t in enumerate(ranked) if t in answers), None)
        rows.append({"text": pr.text, "answers": list(pr.answers), "predictions": predictions, "rank": rank,
                     "unreachable": [a for a in pr.answers if not single_token(tok, a)]})
    return rows


def summarize(rows: list[dict], top_k: int) -> dict:
    scored = [r for r in rows if r["answers"]]
    n = len(scored)
    top1 = sum(1 for r in scored if r["rank"] == 1)
    topk = sum(1 for r in scored if r["rank"] is not None)
    return {"prompts": len(rows), "prompts_with_answers": n, "top_k": top_k,
            "cloze_top1": round(top1 / n, 4) if n else None, "cloze_topk": round(topk / n, 4) if n else None,
            "cloze_top1_hits": top1, "cloze_topk_hits": topk}


def markdown(rows: list[dict], summary: dict) -> str:
    k = summary["top_k"]
    lines = ["# Fill-mask report", ""]
    if summary["prompts_with_answers"]:
        lines += [f"Cloze accuracy on {summary['prompts_with_answers']} prompts with expected answers: "
                  f"**top-1 {summary['cloze_top1']:.0%}** ({summary['cloze_top1_hits']}), "
                  f"**top-{k} {summary['cloze_topk']:.0%}** ({summary['cloze_topk_hits']}).", ""]
    lines += [f"| | prompt | expected | top-{k} predictions (probability) |", "|---|---|---|---|"]
    for r in rows:
        hit = "✅" if r["rank"] == 1 else (f"☑️ {r['rank']}" if r["rank"] else "❌")
        mark = hit if r["answers"] else ""
        preds = ", ".join(f"`{_md(p['token'])}` {p['prob']:.2f}" for p in r["predictions"])
        expected = ", ".join(f"`{_md(a)}`" for a in r["answers"])
        if r["unreachable"]:
            expected += " (not a single token: " + ", ".join(r["unreachable"]) + ")"
        lines.append(f"| {mark} | {_md(r['text'])} | {expected} | {preds} |")
    lines += ["", "✅ top-1 hit · ☑️ n: expected answer at rank n · ❌ not in the top " + str(k), "",
              "## Training", "", "![Masked-LM loss by step](loss.png)", "",  # drawn by evaluate, beside this file
              "![Held-out accuracy by token frequency](accuracy_by_frequency.png)", ""]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<mask>", "`<mask>`").replace("``", "`")
