"""Stage build_model: a random-init model from a config, or a checkpoint -> paths.model_init."""

from _stage import params, run

from mlmpipe.outputs import atomic_dir, write_report
from mlmpipe.params import check_family, check_next_sentence

FIGURES = {"params_total": "params_total", "params_non_embedding": "params_non_embedding"}  # metrics/model.json


def main() -> None:
    seed, paths, tg, m, p = params("seed", "paths", "tokenize_group", "model", "build_model")
    from mlmpipe import model as M  # torch and transformers load only after the params are valid
    from mlmpipe import hub, model_info, tokenizer

    tok = tokenizer.load(paths.tokenizer)
    check_family(tokenizer.kind_of(tok), m.family)  # the kind of the tokenizer that was made or reused
    check_next_sentence(m, tg)
    if p.init == "scratch":
        model = M.build_scratch(m, tok, tg.block_size, seed)
    else:
        model = M.load_pretrained(p.checkpoint, m.family, tok, tg.block_size, p.resize_embeddings,
                                  p.trust_remote_code, m.next_sentence, p.revision)
    # the revision as asked and the commit actually loaded (None from scratch or a local directory)
    pinned = hub.provenance(p.checkpoint if p.init == "pretrained" else None, M.CHECKPOINT_KEY, p.revision,
                            M.REVISION_KEY, ("config.json",))
    with atomic_dir(paths.model_init) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    info = {"init": p.init, "checkpoint": p.checkpoint, **pinned, "preset": m.preset, **model_info.describe(model)}
    write_report(paths.metrics, "model", info, FIGURES)


if __name__ == "__main__":
    run(main)
