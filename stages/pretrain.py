"""Stage pretrain: masked-LM training with accelerate -> paths.model (+ metrics/train.json and curves)."""
import json
from dataclasses import asdict
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import atomic_dir, write_json, write_report, write_text

FIGURES = {"tok_s": "tokens_per_s"}  # metrics/train.json <- the summary in metrics/details/train.json


def csv_text(rows: list[dict]) -> str:
    keys = list(rows[0]) if rows else ["step"]
    return "\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n"


def main() -> None:
    seed, paths, p = params("seed", "paths", "pretrain")
    from mlmpipe import checkpoints, grouping, tokenizer, training  # heavy imports only after the params are valid
    from mlmpipe.masking import Masker
    from mlmpipe.model import input_names, load

    tok = tokenizer.load(paths.tokenizer)
    train_dir, val_dir = Path(paths.tokenized) / "train", Path(paths.tokenized) / "validation"
    (train_data, train_pairs), (val_data, val_pairs) = grouping.load_split(train_dir), grouping.load_split(val_dir)
    with open(Path(paths.tokenized) / "meta.json", encoding="utf-8") as fh:
        block_size = json.load(fh)["block_size"]
    model = load(paths.model_init)
    fp = checkpoints.fingerprint(p, paths.model_init, train_data)
    masker = Masker.from_tokenizer(tok, whole_word=p.whole_word)
    model, hist, summary = training.train(model, train_data, val_data, masker, p, seed, tok.pad_token_id,
                                          paths.checkpoints, fp, train_pairs=train_pairs, val_pairs=val_pairs)
    import accelerate
    if accelerate.PartialState().is_main_process:
        tok.model_max_length = block_size
        tok.model_input_names = input_names(model)
        with atomic_dir(paths.model) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save(tok, tmp)
            write_json(tmp / "training_params.json", {"seed": seed, "block_size": block_size, **asdict(p)})
        write_text(Path(paths.metrics) / "curve_train.csv", csv_text(hist.train))
        write_text(Path(paths.metrics) / "curve_val.csv", csv_text(hist.val))
        write_report(paths.metrics, "train", summary, FIGURES)
        checkpoints.clear_checkpoints(paths.checkpoints)


if __name__ == "__main__":
    run(main)
