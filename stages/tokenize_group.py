"""Stage tokenize_group: tokenize both splits into blocks or lines -> paths.tokenized/{train,validation}."""
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import atomic_dir, write_json, write_report

# metrics/tokenized.json: name -> key of the record (metrics/details/tokenized.json)
FIGURES = {k: k for k in ("train_examples", "train_tokens", "validation_examples", "train_padding_fraction")}


def main() -> None:
    paths, p = params("paths", "tokenize_group")
    from mlmpipe import grouping, tokenizer  # datasets and transformers load only after the params are valid

    tok = tokenizer.load(paths.tokenizer)
    metrics = {"mode": p.mode, "block_size": p.block_size}
    with atomic_dir(paths.tokenized) as tmp:
        for split in ("train", "validation"):
            source = Path(paths.corpus) / f"{split}.parquet"
            ds = grouping.tokenize_split(source, tok, p.mode, p.block_size, p.num_proc, p.batch_size,
                                         tmp / ".scratch")
            if len(ds) == 0:
                raise grouping.GroupingError(
                    f"{source}: the {split} split has fewer tokens than one block (tokenize_group.block_size = "
                    f"{p.block_size}): use a larger corpus or a smaller block_size")
            grouping.save_split(ds, tmp / split)
            metrics.update({f"{split}_{k}": v for k, v in grouping.split_stats(ds, p.block_size).items()})
            del ds
        grouping.clear_scratch(tmp / ".scratch")
        write_json(tmp / "meta.json", {"mode": p.mode, "block_size": p.block_size})
    write_report(paths.metrics, "tokenized", metrics, FIGURES)


if __name__ == "__main__":
    run(main)
