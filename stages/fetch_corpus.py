"""Stage fetch_corpus: read the source, clean, split by document -> paths.corpus/{train,validation}.parquet."""
from pathlib import Path

from _stage import params, run

from mlmpipe import corpus, sources
from mlmpipe.outputs import atomic_dir, write_report

# metrics/corpus.json: name -> key of the record (metrics/details/corpus.json)
FIGURES = {k: k for k in ("documents", "train_documents", "validation_documents", "bytes")}


def main() -> None:
    seed, paths, p = params("seed", "paths", "fetch_corpus")
    out = Path(paths.corpus)
    with atomic_dir(out) as tmp:
        scratch = tmp / ".download"
        scratch.mkdir()
        seen = set()  # one dedupe across all sources: no extra document repeats a validation one
        docs = corpus.clean(sources.iter_source(p.source, p, scratch), p.min_chars, p.dedupe, p.max_documents, seen)
        val = None
        if p.validation_source:
            val = corpus.clean(sources.iter_source(p.validation_source, p, scratch, "fetch_corpus.validation_source"),
                               p.min_chars, p.dedupe, None, seen)
        extra = (doc for i, src in enumerate(p.train_extra)
                 for doc in corpus.clean(sources.iter_source(src, p, scratch, f"fetch_corpus.train_extra[{i}]"),
                                         p.min_chars, p.dedupe, None, seen))
        stats = corpus.write_corpus(docs, tmp, seed, p.validation_fraction, val, p.source, p.min_chars, extra,
                                     p.validation_source)
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
    write_report(paths.metrics, "corpus", {"source": p.source, **stats}, FIGURES)


if __name__ == "__main__":
    run(main)
