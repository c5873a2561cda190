"""Stage pretrain: masked-LM training with accelerate -> paths.model (+ metrics/train.json, and the curves and
metrics/live/metrics.json kept current while it runs)."""
import json
from dataclasses import asdict
from pathlib import Path

from _stage import params, run

from mlmpipe.outputs import atomic_dir, write_json, write_report

FIGURES = {"tok_s": "tokens_per_s"}  # metrics/train.json <- the summary in metrics/details/train.json


def main() -> None:
    seed, paths, p = params("seed", "paths", "pretrain")
    import accelerate

    from mlmpipe import checkpoints, grouping, tokenizer, training  # heavy imports only after the params are valid
    from mlmpipe.live import LiveMetrics
    from mlmpipe.masking import Masker
    from mlmpipe.model import input_names, load

    tok = tokenizer.load(paths.tokenizer)
    train_dir, val_dir = Path(paths.tokenized) / "train", Path(paths.tokenized) / "validation"
    (train_data, train_pairs), (val_data, val_pairs) = grouping.load_split(train_dir), grouping.load_split(val_dir)
    with open(Path(paths.tokenized) / "meta.json", encoding="utf-8") as fh:
        block_size = json.load(fh)["block_size"]
    model = load(paths.model_init)
    fp = checkpoints.fingerprint(p, paths.model_init, train_data)
    ckpt_dir = checkpoints.run_dir(paths.checkpoints, fp)  # <paths.checkpoints or $MLMPIPE_CHECKPOINTS>/<fp>
    masker = Masker.from_tokenizer(tok, whole_word=p.whole_word)
    model, hist, summary = training.train(model, train_data, val_data, masker, p, seed, tok.pad_token_id,
                                          ckpt_dir, fp, train_pairs=train_pairs, val_pairs=val_pairs,
                                          live=lambda: LiveMetrics(paths.metrics))  # metrics/live + the curves
    if accelerate.PartialState().is_main_process:  # (after training: the Accelerator has set up the processes)
        tok.model_max_length = block_size
        tok.model_input_names = input_names(model)
        with atomic_dir(paths.model) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save(tok, tmp)
            write_json(tmp / "training_params.json", {"seed": seed, "block_size": block_size, **asdict(p)})
        write_report(paths.metrics, "train", summary, FIGURES)
        checkpoints.clear_checkpoints(ckpt_dir)


if __name__ == "__main__":
    run(main)
