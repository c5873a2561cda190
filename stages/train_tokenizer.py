"""Stage train_tokenizer: train a tokenizer on the training split only (or reuse one) -> paths.tokenizer."""

from _stage import params, run

from mlmpipe import corpus
from mlmpipe.outputs import atomic_dir, write_report

FIGURES = {"vocab_size": "vocab_size", "fertility": "fertility"}  # metrics/tokenizer.json <- details/tokenizer.json


def main() -> None:
    paths, p = params("paths", "train_tokenizer")
    from mlmpipe import tokenizer  # transformers loads only after the params are valid

    if p.from_dir:
        tok = tokenizer.load(p.from_dir, "train_tokenizer.from")
    else:
        tok = tokenizer.train(corpus.read_split(paths.corpus, "train"), p.kind, p.vocab_size, p.min_frequency,
                              p.lowercase, p.model_max_length)
    with atomic_dir(paths.tokenizer) as tmp:
        tokenizer.save(tok, tmp)
    validation = list(corpus.read_split(paths.corpus, "validation"))
    stats = tokenizer.stats(tok, p.vocab_size, validation)
    write_report(paths.metrics, "tokenizer", {"source": p.from_dir or "trained", **stats}, FIGURES)


if __name__ == "__main__":
    run(main)
