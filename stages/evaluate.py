"""Stage evaluate: held-out masked-LM metrics with fixed masks -> metrics/eval.json, the accuracy by token
frequency, and the run's charts as PNG (the loss curve, the accuracy by frequency)."""
import logging
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import atomic_file, write_report, write_text

FIGURES = {"ppl": "perplexity", "top1": "top1_accuracy", "top5": "top5_accuracy"}  # metrics/eval.json <- details/


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
    figures = {**FIGURES, **({f"before_{k}": f"before_{v}" for k, v in FIGURES.items()} if p.baseline else {})}
    write_report(paths.metrics, "eval", {"examples": len(val), **out}, figures)
    rows = ["bucket,tokens,top1,top5"] + [f"{b['bucket']},{b['tokens']},{b['top1']:.4f},{b['top5']:.4f}"
                                          for b in buckets]
    write_text(Path(paths.metrics) / "eval_by_frequency.csv", "\n".join(rows) + "\n")
    draw_charts(Path(paths.metrics))


def draw_charts(out: Path) -> None:
    """The loss curve and the accuracy by frequency as PNG, beside the fill-mask report that links them."""
    from mlmpipe import charts

    try:
        import vl_convert  # noqa: F401  (charts.png's renderer)
    except ImportError:  # a machine without vl-convert-python (~30 MB), e.g. bench/gpu_check.sh's GPU machine
        logging.getLogger("evaluate").warning(
            "vl-convert-python is not installed: %s and %s are not drawn", charts.LOSS_PNG, charts.FREQUENCY_PNG)
        return
    loss = charts.loss_spec(charts.read_csv(out / "curve_train.csv"), charts.read_csv(out / "curve_val.csv"))
    frequency = charts.frequency_spec(charts.read_csv(out / "eval_by_frequency.csv"))
    for name, spec in ((charts.LOSS_PNG, loss), (charts.FREQUENCY_PNG, frequency)):
        with atomic_file(out / name, "wb") as fh:
            fh.write(charts.png(spec))


if __name__ == "__main__":
    run(main)
