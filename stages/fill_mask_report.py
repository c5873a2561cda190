"""Stage fill_mask_report: top-k predictions for the prompts -> metrics/fill_mask.{md,json}; the report links
the charts that evaluate draws beside it. Then the publishable folder (paths.release): the trained model and
its tokenizer with a Hugging Face model card (README.md) holding the held-out results and these predictions."""
import dataclasses
import shutil
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import atomic_dir, read_json, write_report, write_text

FIGURES = {"cloze@1": "cloze_top1", "cloze@k": "cloze_topk"}  # metrics/fill_mask.json <- details/ (every prompt too)


def main() -> None:
    paths, p, train = params("paths", "fill_mask_report", "pretrain")
    from mlmpipe import card, fill_mask  # transformers loads only after the params are valid

    rows = fill_mask.run_prompts(paths.model, p.prompts, p.top_k)
    summary = fill_mask.summarize(rows, p.top_k)
    write_text(Path(paths.metrics) / "fill_mask.md", fill_mask.markdown(rows, summary))
    report = {**summary, "results": rows}
    write_report(paths.metrics, "fill_mask", report, FIGURES)

    details = Path(paths.metrics) / "details"
    text = card.model_card(name=p.model_name, license=p.license, language=p.language,
                           model=read_json(details / "model.json"), corpus=read_json(details / "corpus.json"),
                           evaluation=read_json(details / "eval.json"), fill_mask=report,
                           training=dataclasses.asdict(train))
    with atomic_dir(paths.release) as tmp:
        shutil.copytree(paths.model, tmp, dirs_exist_ok=True)
        write_text(tmp / "README.md", text)


if __name__ == "__main__":
    run(main)
