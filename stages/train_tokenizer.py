"""Stage train_tokenizer: train a tokenizer on the training split only (or reuse one) -> paths.tokenizer."""

from _stage import params, run

from mlmpipe import corpus
from mlmpipe.outputs import atomic_dir, write_report

FIGURES = {"vocab_size": "vocab_size", "fertility": "fertility"}  # metrics/tokenizer.json <- details/tokenizer.json


def main() -> None:
    paths, p = params("paths", "train_tokenizer")
    from mlmpipe import hub, tokenizer  # transformers loads only after the params are valid

    if p.from_dir:
        tok = tokenizer.load(p.from_dir, "train_tokenizer.from", p.from_revision, "train_tokenizer.from_revision")
    else:
        tok = tokenizer.train(corpus.read_split(paths.corpus, "train"), p.kind, p.vocab_size, p.min_frequency,
                              p.lowercase, p.model_max_length)
    with atomic_dir(paths.tokenizer) as tmp:
        tokenizer.save(tok, tmp)
    validation = list(corpus.read_split(paths.corpus, "validation"))
    stats = tokenizer.stats(tok, p.vocab_size, validation)
    # the revision as asked and the commit actually loaded (None for a trained tokenizer or a local directory)
    pinned = hub.provenance(p.from_dir, "train_tokenizer.from", p.from_revision, "train_tokenizer.from_revision",
                            tokenizer.TOKENIZER_FILES)
    write_report(paths.metrics, "tokenizer", {"source": p.from_dir or "trained", **pinned, **stats}, FIGURES)


if __name__ == "__main__":
    run(main)
