"""End to end: the real seven-stage `dvc repro` on a tiny corpus and model, in a throwaway git + DVC repo.

The tests of this module share one repo and run in file order: the full run, a no-op rerun,
then one params change at a time, each of which must rerun exactly the stages that dvc.yaml
says depend on that param. Last, a second fresh repo with the same params must reproduce the
first run's data byte for byte (the determinism check).
"""
from __future__ import annotations

import math

import pytest

from pipeline_repo import STAGES, PipelineRepo, make_repo, snapshot, stages_run

pytestmark = pytest.mark.slow

# What the determinism check compares between two fresh repos, byte for byte. Not train.json (timings;
# its losses are compared). curve_train.csv has no timing columns (step, loss, lr), so it is compared whole.
DETERMINISTIC = ("data/corpus", "data/tokenizer", "data/tokenized", "data/model_init", "data/model",
                 *(f"metrics/{name}.json" for name in ("eval", "corpus", "tokenizer", "tokenized", "model", "fill_mask")),
                 *(f"metrics/details/{name}.json" for name in ("eval", "corpus", "tokenizer", "tokenized", "model",
                                                               "fill_mask")),
                 "metrics/fill_mask.md", "metrics/loss.png", "metrics/accuracy_by_frequency.png",
                 "metrics/curve_train.csv", "metrics/curve_val.csv", "metrics/eval_by_frequency.csv",
                 "metrics/live/metrics.json", "data/release")
# The DVC metrics files: flat mappings of a few numbers (what `dvc exp show` makes columns of).
FLAT_METRICS = ("corpus", "tokenizer", "tokenized", "model", "train", "eval", "fill_mask", "live/metrics")


class Run:
    def __init__(self, repo: PipelineRepo, rc: int, out: str, err: str, snap: dict, train: dict | None):
        self.repo, self.rc, self.out, self.err, self.snap, self.train = repo, rc, out, err, snap, train


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Run:
    repo = make_repo(tmp_path_factory.mktemp("e2e") / "repo")
    rc, out, err = repo.repro()
    train = repo.read_json("metrics/details/train.json") if rc == 0 else None
    return Run(repo, rc, out, err, snapshot(repo, DETERMINISTIC), train)


def _repro(repo: PipelineRepo) -> list[str]:
    rc, out, err = repo.repro()
    assert rc == 0, f"dvc repro failed ({rc}):\n{out[-3000:]}\n{err[-5000:]}"
    return stages_run(out)


def test_full_repro_runs_all_stages(first: Run):
    assert first.rc == 0, f"dvc repro failed ({first.rc}):\n{first.out[-3000:]}\n{first.err[-5000:]}"
    assert stages_run(first.out) == list(STAGES)


def test_outputs_exist_and_load(first: Run):
    from transformers import AutoTokenizer, pipeline

    root = first.repo.path
    for split in ("train", "validation"):
        assert (root / "data/corpus" / f"{split}.parquet").is_file()
        assert (root / "data/tokenized" / split).is_dir()
    tok = AutoTokenizer.from_pretrained(root / "data/tokenizer")
    assert tok.mask_token is not None and len(tok) > 0
    for d in ("data/model_init", "data/model"):
        assert (root / d / "model.safetensors").is_file(), d
    fill = pipeline("fill-mask", model=str(root / "data/model"), device="cpu", top_k=3)
    preds = fill(f"The baker sold {fill.tokenizer.mask_token} warm coat.")
    assert len(preds) == 3 and all(0.0 <= p["score"] <= 1.0 and isinstance(p["token_str"], str) for p in preds)


def test_metrics(first: Run):
    repo = first.repo
    for name in FLAT_METRICS:
        data = repo.read_json(f"metrics/{name}.json")
        assert isinstance(data, dict) and data, name
        odd = {k: v for k, v in data.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        assert not odd and len(data) <= 6, f"metrics/{name}.json is not a few numbers: {data}"
    fm = repo.read_json("metrics/details/fill_mask.json")
    assert fm["prompts"] == 2 and fm["top_k"] == 3 and all(len(r["predictions"]) == 3 for r in fm["results"])
    assert (repo.path / "metrics/fill_mask.md").read_text(encoding="utf-8").startswith("# Fill-mask report")

    model = repo.read_json("metrics/details/model.json")
    assert model["init"] == "scratch" and model["checkpoint"] is None
    assert model["family"] == "modernbert" and model["layers"] == 1 and model["hidden"] == 32
    assert model["params_total"] > 0
    assert model["params_embedding"] + model["params_non_embedding"] == model["params_total"]
    assert model["vocab_size"] == repo.read_json("metrics/details/tokenizer.json")["vocab_size"]

    ev = repo.read_json("metrics/details/eval.json")
    assert ev["masked_tokens"] > 0 and ev["examples"] > 0
    assert math.isclose(ev["perplexity"], math.exp(ev["loss"]), rel_tol=1e-9)
    assert math.isclose(ev["before_perplexity"], math.exp(ev["before_loss"]), rel_tol=1e-9)
    assert 0.0 <= ev["top1_accuracy"] <= ev["top5_accuracy"] <= 1.0
    # the metrics are the details' headline figures, short-named and rounded to 4 decimals
    assert repo.read_json("metrics/eval.json") == {
        short: round(ev[key], 4) for short, key in (("ppl", "perplexity"), ("top1", "top1_accuracy"),
                                                     ("top5", "top5_accuracy"), ("before_ppl", "before_perplexity"),
                                                     ("before_top1", "before_top1_accuracy"),
                                                     ("before_top5", "before_top5_accuracy"))}
    assert repo.read_json("metrics/fill_mask.json") == {"cloze@1": fm["cloze_top1"], "cloze@k": fm["cloze_topk"]}
    report = (repo.path / "metrics/fill_mask.md").read_text(encoding="utf-8")
    for png in ("loss.png", "accuracy_by_frequency.png"):  # the charts a pull request shows, beside the report
        assert f"]({png})" in report and (repo.path / "metrics" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    train = repo.read_json("metrics/details/train.json")
    assert train["steps"] == 10 and train["resumed_from_step"] == 0
    assert repo.read_json("metrics/train.json") == {"tok_s": round(train["tokens_per_s"], 4)}
    spent = repo.path / "data/checkpoints"  # the finished run's checkpoints are gone
    assert not spent.exists() or list(spent.iterdir()) == []
    for curve in ("curve_train.csv", "curve_val.csv"):
        lines = (repo.path / "metrics" / curve).read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("step,") and len(lines) == 3, curve  # header + steps 5 and 10


def test_second_repro_runs_nothing(first: Run):
    assert _repro(first.repo) == []
    rc, out, err = first.repo.dvc("status")
    assert rc == 0, err
    assert "up to date" in out.lower() and "changed" not in out, out


@pytest.mark.parametrize("change, expected", [
    # train_tokenizer.* -> the tokenizer and everything after it, not fetch_corpus
    ({"train_tokenizer.vocab_size": 320},
     ["train_tokenizer", "tokenize_group", "build_model", "pretrain", "evaluate", "fill_mask_report"]),
    # evaluate.* -> evaluate, and the report whose model card states its results; not the model
    ({"evaluate.seed": 99}, ["evaluate", "fill_mask_report"]),
    # pretrain.* -> the trained model and what reads it; not the data stages, not build_model
    ({"pretrain.lr": 0.003}, ["pretrain", "evaluate", "fill_mask_report"]),
    ({"fill_mask_report.top_k": 2}, ["fill_mask_report"]),
], ids=["train_tokenizer.vocab_size", "evaluate.seed", "pretrain.lr", "fill_mask_report.top_k"])
def test_param_change_reruns_only_dependents(first: Run, change: dict, expected: list):
    first.repo.set_params(change)
    assert _repro(first.repo) == expected


def test_clean_after_changes(first: Run):
    rc, out, err = first.repo.dvc("status")
    assert rc == 0 and "changed" not in out, out + err
    assert first.repo.read_json("metrics/details/fill_mask.json")["top_k"] == 2


def test_two_fresh_repos_are_byte_identical(first: Run, tmp_path_factory):
    """Same params, two checkouts in different directories: identical data and evaluation."""
    assert first.rc == 0
    other = make_repo(tmp_path_factory.mktemp("e2e_twin") / "repo")
    assert _repro(other) == list(STAGES)
    snap = snapshot(other, DETERMINISTIC)
    assert [rel for rel in DETERMINISTIC if not first.snap[rel]] == [], "missing outputs"
    differ = {}  # every output that differs, not only the first
    for rel in DETERMINISTIC:
        a, b = first.snap[rel], snap[rel]
        files = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if files:
            differ[rel] = files
    assert differ == {}, "outputs differ between two fresh repos"
    # train.json differs only in timings; its losses must agree
    ta, tb = first.train, other.read_json("metrics/details/train.json")
    assert ta["final_train_loss"] == tb["final_train_loss"] and ta["final_val_loss"] == tb["final_val_loss"]
