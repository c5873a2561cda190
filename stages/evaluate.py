"""Stage evaluate: held-out masked-LM metrics with fixed masks -> metrics/eval.json (+ by-frequency plot)."""
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import write_json, write_text


def main() -> None:
    paths, p = params("paths", "evaluate")
    from mlmpipe import evaluation, grouping, tokenizer, validation  # heavy imports only after the params are valid
    from mlmpipe.masking import Masker
    from mlmpipe.model import load

    tok = tokenizer.load(paths.model)
    val, pairs = grouping.load_split(Path(paths.tokenized) / "validation")  # pairs: next-sentence labels, if any
    val = val[:p.max_blocks]
    ranks = evaluation.token_ranks(grouping.load_blocks(Path(paths.tokenized) / "train"), len(tok))
    masks = validation.fixed_masks(val, Masker.from_tokenizer(tok), p.mlm_probability, p.seed, p.passes, pairs)
    model = load(paths.model)
    out = evaluation.masked_lm_eval(model, masks, p.batch_size, tok.pad_token_id, token_rank=ranks)
    buckets = out.pop("by_frequency")
    if p.baseline:
        init = load(paths.model_init)
        base = evaluation.masked_lm_eval(init, masks, p.batch_size, tok.pad_token_id)
        out.update({f"before_{k}": v for k, v in base.items() if k != "masked_tokens"})
    write_json(Path(paths.metrics) / "eval.json", {"examples": len(val), **out})
    rows = ["bucket,tokens,top1,top5"] + [f"{b['bucket']},{b['tokens']},{b['top1']:.4f},{b['top5']:.4f}"
                                          for b in buckets]
    write_text(Path(paths.metrics) / "eval_by_frequency.csv", "\n".join(rows) + "\n")


if __name__ == "__main__":
    run(main)
