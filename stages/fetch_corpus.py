"""Stage fetch_corpus: read the source, clean, split by document -> paths.corpus/{train,validation}.parquet."""
from pathlib import Path

from _stage import params, run

from mlmpipe import corpus
from mlmpipe.outputs import atomic_dir, write_json


def main() -> None:
    seed, paths, p = params("seed", "paths", "fetch_corpus")
    out = Path(paths.corpus)
    with atomic_dir(out) as tmp:
        scratch = tmp / ".download"
        scratch.mkdir()
        docs = corpus.clean(corpus.iter_source(p.source, p, scratch), p.min_chars, p.dedupe, p.max_documents)
        val = None
        if p.validation_source:
            val = corpus.clean(corpus.iter_source(p.validation_source, p, scratch), p.min_chars, p.dedupe, None)
        stats = corpus.write_corpus(docs, tmp, seed, p.validation_fraction, val, p.source, p.min_chars)
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
    write_json(Path(paths.metrics) / "corpus.json", {"source": p.source, **stats})


if __name__ == "__main__":
    run(main)
