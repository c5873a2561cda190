"""Stage fill_mask_report: top-k predictions for the prompts -> metrics/fill_mask.{md,json}."""
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import write_json, write_text


def main() -> None:
    paths, p = params("paths", "fill_mask_report")
    from mlmpipe import fill_mask  # transformers loads only after the params are valid

    rows = fill_mask.run_prompts(paths.model, p.prompts, p.top_k)
    summary = fill_mask.summarize(rows, p.top_k)
    write_text(Path(paths.metrics) / "fill_mask.md", fill_mask.markdown(rows, summary))
    write_json(Path(paths.metrics) / "fill_mask.json", {**summary, "results": rows})


if __name__ == "__main__":
    run(main)
