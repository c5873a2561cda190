"""The README's recipes ("coming from ... -> run this"), each run end to end on tiny data.

Every recipe is the same seven stages with a params change, run here the way the README says:
``dvc exp run -S key=value ...`` in a throwaway git + DVC repo (``tests/pipeline_repo.py``) whose
params.yaml holds the tiny defaults (ModernBERT, byte-level BPE, 1 layer, block 32, 10 steps).

1. RoBERTa from scratch (byte-level BPE, ``RobertaForMaskedLM``, positions = block_size + 2).
2. BERT from scratch (WordPiece, lowercased, ``[CLS]``/``[SEP]``/``[MASK]``); and with BERT's second
   objective, next-sentence prediction (``BertForPreTraining`` on sentence pairs).
3. Domain adaptation: a tiny DistilBERT "pretrained" checkpoint is built first by running the pipeline
   (up to ``pretrain``) in repo A (a copy of the BERT run with model.family = distilbert); repo B, with
   a corpus on another topic, starts from A's ``data/model`` (model + tokenizer). Also the common
   error of giving a checkpoint with ``init: scratch``.
4. Whole-word masking for BPE (ModernBERT) and WordPiece (BERT), and a library-level check of
   ``Masker(whole_word=True)`` on the real tokenized blocks of those runs.
5. A tokenizer kind that does not fit the architecture (WordPiece + RoBERTa) is refused by ``check_params``,
   before any stage runs.

Last, a static check of the README's recipe table: every row's ``-S`` overrides are applied to the
project's params.yaml the way ``dvc exp run -S`` applies them, and every section must still parse.

To keep the file quick on a 2-core machine, runs that only add a params change to an earlier run
(whole-word masking, the two errors) start from a copy of that run's repo, so DVC reruns only the
stages the change affects; which stages rerun is asserted too.
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from corpora import corpus_text
from pipeline_repo import PROJECT, STAGES, PipelineRepo, make_repo, run_readme, stages_run, tiny_params

pytestmark = pytest.mark.slow

# The README's recipe commands, as the -S overrides they pass (checked against README.md below).
RECIPES = {
    "roberta": ["model.family=roberta", "model.intermediate=1024"],
    "bert": ["model.family=bert", "train_tokenizer.kind=wordpiece", "train_tokenizer.lowercase=true"],
    "bert_nsp": ["model.family=bert", "train_tokenizer.kind=wordpiece", "train_tokenizer.lowercase=true",
                 "model.next_sentence=true", "tokenize_group.mode=sentence_pairs"],
    "adaptation": ["build_model.init=pretrained", "build_model.checkpoint={ckpt}", "train_tokenizer.from={ckpt}",
                   "model.family=distilbert"],
    "whole_word": ["pretrain.whole_word=true"],
    "line_by_line": ["model.family=roberta", "model.intermediate=1024", "tokenize_group.mode=line_by_line"],
}
ADAPT_STEPS = 30  # enough continued pretraining for the before/after gain to be reliable on tiny data
PROMPT = "The baker sold {mask} warm coat."


# ---------------------------------------------------------------------------------------------
# helpers


@dataclass
class Run:
    repo: PipelineRepo
    rc: int
    out: str
    err: str

    def check(self) -> "Run":
        assert self.rc == 0, f"run failed ({self.rc}):\n{self.out[-3000:]}\n{self.err[-5000:]}"
        return self


def exp_run(repo: PipelineRepo, recipe: str, extra: tuple[str, ...] = ()) -> Run:
    """The README's ``dvc exp run`` line of ``recipe``, run in ``repo`` exactly as written (through bash), with
    ``extra`` step-count overrides appended; the results are applied to its workspace."""
    return Run(repo, *run_readme(repo, README_LINES[recipe], extra))


def copy_repo(repo: PipelineRepo, dest: Path) -> PipelineRepo:
    """A copy of a repo after a run (git, DVC cache, workspace outputs), to add a params change to."""
    shutil.copytree(repo.path, dest, symlinks=True)
    return PipelineRepo(dest)


def error_lines(text: str) -> list[str]:
    """The stage's own one-line errors (DVC's own summary says "ERROR:", in capitals)."""
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


def assert_fill_mask_works(model_dir: Path, mask: str) -> None:
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(model_dir), device="cpu", top_k=3)
    assert fill.tokenizer.mask_token == mask
    preds = fill(PROMPT.format(mask=mask))
    assert len(preds) == 3
    assert all(0.0 <= p["score"] <= 1.0 and isinstance(p["token_str"], str) for p in preds)
    assert all(mask not in p["sequence"] for p in preds)


def assert_report_written(repo: PipelineRepo) -> None:
    """fill_mask_report ran the params' prompts (written with <mask>) through the family's mask token."""
    fm = repo.read_json("metrics/details/fill_mask.json")
    assert fm["prompts"] == 2 and all(len(r["predictions"]) == 3 for r in fm["results"])


# ---------------------------------------------------------------------------------------------
# the runs (module scope: each is made once and shared by the tests that read it)


@pytest.fixture(scope="module")
def roberta(tmp_path_factory) -> Run:
    repo = make_repo(tmp_path_factory.mktemp("recipe_roberta") / "repo")
    return exp_run(repo, "roberta")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Run:
    repo = make_repo(tmp_path_factory.mktemp("recipe_bert") / "repo")
    return exp_run(repo, "bert")


@pytest.fixture(scope="module")
def bert_nsp(tmp_path_factory, bert) -> Run:
    """The NSP row on a copy of the BERT run: same corpus and tokenizer, so tokenize_group and after rerun."""
    bert.check()
    repo = copy_repo(bert.repo, tmp_path_factory.mktemp("recipe_bert_nsp") / "repo")
    return exp_run(repo, "bert_nsp", ("pretrain.max_steps=20",))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bert) -> Path:
    """A small DistilBERT "pretrained" checkpoint (model + tokenizer): repo A's data/model.

    Repo A is a copy of the BERT run (lowercased WordPiece, as distilbert-base-uncased in the HF
    course) with model.family = distilbert, reproduced up to pretrain: only build_model and pretrain run."""
    bert.check()
    repo = copy_repo(bert.repo, tmp_path_factory.mktemp("recipe_ckpt") / "repo")
    repo.set_params({"model.family": "distilbert"})
    rc, out, err = repo.repro("pretrain")
    assert rc == 0, f"building the checkpoint failed ({rc}):\n{out[-3000:]}\n{err[-5000:]}"
    assert stages_run(out) == ["build_model", "pretrain"]
    assert repo.read_json("metrics/details/model.json")["architecture"] == "DistilBertForMaskedLM"
    ckpt = repo.path / "data" / "model"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    return ckpt


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, checkpoint) -> Run:
    """Repo B: another corpus, the defaults + the README's domain-adaptation overrides (+ more steps)."""
    repo = make_repo(tmp_path_factory.mktemp("recipe_adapt") / "repo",
                     tiny_params(pretrain={"max_steps": ADAPT_STEPS}), corpus=corpus_text("cooking"))
    shutil.copytree(checkpoint, repo.path / README_CKPT)  # where the README's command line points
    return exp_run(repo, "adaptation")


@pytest.fixture(scope="module")
def ww_bpe(tmp_path_factory, roberta) -> Run:
    """The README's whole-word row on the default params (ModernBERT, byte-level BPE).

    Starts from a copy of the RoBERTa run with params.yaml back at the committed defaults: the corpus,
    tokenizer and blocks are the same, so only build_model and what follows rerun."""
    roberta.check()
    repo = copy_repo(roberta.repo, tmp_path_factory.mktemp("recipe_ww_bpe") / "repo")
    rc, out, err = repo.git("checkout", "--", "params.yaml")
    assert rc == 0, err
    assert repo.params()["model"]["family"] == "modernbert"
    return exp_run(repo, "whole_word")


@pytest.fixture(scope="module")
def line_by_line(tmp_path_factory, roberta) -> Run:
    """The README's line_by_line row on a copy of the RoBERTa run: same corpus and tokenizer, so
    tokenize_group and what follows rerun."""
    roberta.check()
    repo = copy_repo(roberta.repo, tmp_path_factory.mktemp("recipe_lbl") / "repo")
    return exp_run(repo, "line_by_line")


@pytest.fixture(scope="module")
def ww_wordpiece(tmp_path_factory, bert) -> Run:
    """The README's whole-word row on top of the BERT recipe (WordPiece ``##`` pieces)."""
    bert.check()
    repo = copy_repo(bert.repo, tmp_path_factory.mktemp("recipe_ww_wp") / "repo")
    return exp_run(repo, "whole_word")


# ---------------------------------------------------------------------------------------------
# 1. RoBERTa from scratch


def test_roberta_from_scratch(roberta: Run):
    roberta.check()
    repo = roberta.repo
    assert stages_run(roberta.out) == list(STAGES)
    model = repo.read_json("metrics/details/model.json")
    block_size = repo.params()["tokenize_group"]["block_size"]
    assert model["architecture"] == "RobertaForMaskedLM" and model["family"] == "roberta"
    assert model["max_position_embeddings"] == block_size + 2
    assert model["init"] == "scratch" and model["checkpoint"] is None
    assert model["intermediate"] == 1024
    assert repo.read_json("metrics/details/tokenizer.json")["kind"] == "bpe"
    assert_report_written(repo)
    assert_fill_mask_works(repo.path / "data/model", "<mask>")


def test_roberta_line_by_line(line_by_line: Run, roberta: Run):
    line_by_line.check()
    repo = line_by_line.repo
    assert stages_run(line_by_line.out) == list(STAGES)[STAGES.index("tokenize_group"):]
    tokenized, grouped = repo.read_json("metrics/details/tokenized.json"), roberta.repo.read_json("metrics/details/tokenized.json")
    assert tokenized["mode"] == "line_by_line" and grouped["mode"] == "group"
    corpus = repo.read_json("metrics/details/corpus.json")
    assert tokenized["train_examples"] == corpus["train_documents"]  # one example per document, not per block
    assert tokenized["train_tokens"] < grouped["train_tokens"]  # documents longer than a block are cut
    train = repo.read_json("metrics/details/train.json")
    p = repo.params()["pretrain"]
    assert 0 < train["train_tokens_seen"] <= p["max_steps"] * p["batch_size"] * tokenized["block_size"]
    ev = repo.read_json("metrics/details/eval.json")
    assert ev["masked_tokens"] > 0 and math.isfinite(ev["perplexity"])
    assert_report_written(repo)
    assert_fill_mask_works(repo.path / "data/model", "<mask>")


# ---------------------------------------------------------------------------------------------
# 2. BERT from scratch (WordPiece, lowercased), with and without next-sentence prediction


def test_bert_from_scratch(bert: Run):
    from transformers import AutoTokenizer

    bert.check()
    repo = bert.repo
    assert stages_run(bert.out) == list(STAGES)
    model = repo.read_json("metrics/details/model.json")
    assert model["architecture"] == "BertForMaskedLM" and model["init"] == "scratch"
    assert repo.read_json("metrics/details/tokenizer.json")["kind"] == "wordpiece"

    tok = AutoTokenizer.from_pretrained(repo.path / "data/model")
    assert (tok.cls_token, tok.sep_token, tok.mask_token, tok.pad_token) == ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
    text = "The Old Librarian OPENED the Heavy Door."
    assert tok(text)["input_ids"] == tok(text.lower())["input_ids"]
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert all(p == p.lower() for p in pieces[1:-1]), pieces
    assert_report_written(repo)
    assert_fill_mask_works(repo.path / "data/model", "[MASK]")


def test_bert_with_next_sentence_prediction(bert_nsp: Run):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from mlmpipe.grouping import load_split

    bert_nsp.check()
    repo = bert_nsp.repo
    assert stages_run(bert_nsp.out) == ["tokenize_group", "build_model", "pretrain", "evaluate", "fill_mask_report"]
    assert repo.read_json("metrics/details/model.json")["architecture"] == "BertForPreTraining"
    assert repo.read_json("metrics/details/tokenized.json")["mode"] == "sentence_pairs"

    # [CLS] A [SEP] B [SEP], segment ids 0 then 1, about half the pairs NotNext.
    tok = AutoTokenizer.from_pretrained(repo.path / "data/tokenizer")
    ids, (types, labels) = load_split(repo.path / "data/tokenized/train")
    assert len(ids) == len(types) == len(labels) > 20
    block = repo.params()["tokenize_group"]["block_size"]
    for x, t in zip(ids, types):
        seps = np.flatnonzero(x == tok.sep_token_id)
        assert x[0] == tok.cls_token_id and len(seps) == 2 and seps[1] == len(x) - 1 and len(x) <= block
        assert (t[:seps[0] + 1] == 0).all() and (t[seps[0] + 1:] == 1).all()
    assert 0.3 < labels.mean() < 0.7

    weights = load_file(repo.path / "data/model/model.safetensors")
    assert any(k.startswith("cls.seq_relationship") for k in weights)
    ev = repo.read_json("metrics/details/eval.json")
    assert 0.0 <= ev["nsp_accuracy"] <= 1.0 and "before_nsp_accuracy" in ev and ev["perplexity"] > 1
    curve = (repo.path / "metrics/curve_train.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,nsp_loss" and len(curve) > 2
    assert_report_written(repo)
    assert_fill_mask_works(repo.path / "data/model", "[MASK]")  # the MLM half loads as BertForMaskedLM


# ---------------------------------------------------------------------------------------------
# 3. Domain adaptation of an existing checkpoint


def test_domain_adaptation(adapted: Run, checkpoint: Path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from mlmpipe.grouping import load_blocks

    adapted.check()
    repo = adapted.repo
    assert stages_run(adapted.out) == list(STAGES)
    model = repo.read_json("metrics/details/model.json")
    assert model["init"] == "pretrained" and model["checkpoint"] == README_CKPT
    assert model["family"] == "distilbert" and model["architecture"] == "DistilBertForMaskedLM"
    assert repo.read_json("metrics/details/tokenizer.json")["source"] == README_CKPT

    # It really started from the checkpoint's weights, with the checkpoint's vocabulary.
    start = load_file(repo.path / "data/model_init/model.safetensors")
    ckpt = load_file(checkpoint / "model.safetensors")
    assert start.keys() == ckpt.keys() and all(torch.equal(start[k], ckpt[k]) for k in ckpt)
    assert AutoTokenizer.from_pretrained(repo.path / "data/tokenizer").get_vocab() == \
        AutoTokenizer.from_pretrained(checkpoint).get_vocab()

    # The reused vocabulary covers the new corpus (an [UNK]-heavy corpus would make the gain meaningless).
    tok = AutoTokenizer.from_pretrained(repo.path / "data/model")
    blocks = np.asarray(load_blocks(repo.path / "data/tokenized/train"))
    assert (blocks == tok.unk_token_id).mean() < 0.01

    ev = repo.read_json("metrics/details/eval.json")
    assert ev["perplexity"] > 1 and ev["before_perplexity"] > 1
    assert ev["perplexity"] < ev["before_perplexity"], ev
    assert_fill_mask_works(repo.path / "data/model", "[MASK]")


def test_checkpoint_with_init_scratch_fails(adapted: Run, tmp_path):
    """The common error: a checkpoint given but init left at scratch -> build_model says to set init."""
    adapted.check()
    repo = copy_repo(adapted.repo, tmp_path / "repo")
    repo.set_params({"build_model.init": "scratch"})  # build_model.checkpoint stays set
    rc, out, err = repo.repro()
    assert rc != 0
    assert stages_run(out, with_check=True) == ["check_params"]  # refused before any stage runs
    errors = error_lines(err + "\n" + out)
    assert len(errors) == 1, err[-3000:]
    assert "init" in errors[0] and "build_model.checkpoint" in errors[0], errors[0]


# ---------------------------------------------------------------------------------------------
# 4. Whole-word masking


def test_whole_word_bpe_modernbert(ww_bpe: Run):
    ww_bpe.check()
    repo = ww_bpe.repo
    assert stages_run(ww_bpe.out) == ["build_model", "pretrain", "evaluate", "fill_mask_report"]
    assert repo.read_json("metrics/details/model.json")["architecture"] == "ModernBertForMaskedLM"
    assert repo.read_json("metrics/details/tokenizer.json")["kind"] == "bpe"
    assert repo.read_json("data/model/training_params.json")["whole_word"] is True
    assert repo.read_json("metrics/details/eval.json")["perplexity"] > 1
    assert_report_written(repo)


def test_whole_word_wordpiece_bert(ww_wordpiece: Run):
    ww_wordpiece.check()
    repo = ww_wordpiece.repo
    assert stages_run(ww_wordpiece.out) == ["pretrain", "evaluate", "fill_mask_report"]
    assert repo.read_json("metrics/details/model.json")["architecture"] == "BertForMaskedLM"
    assert repo.read_json("data/model/training_params.json")["whole_word"] is True
    assert repo.read_json("metrics/details/eval.json")["perplexity"] > 1
    assert_report_written(repo)


@pytest.mark.parametrize("run_name", ["ww_bpe", "ww_wordpiece"])
def test_whole_word_masker_on_real_blocks(run_name, request):
    """With a whole-word run's saved tokenizer, every piece of a multi-piece word is masked together,
    and the masked share of (non-special) tokens over all training blocks is close to mlm_probability."""
    from transformers import AutoTokenizer

    from mlmpipe.grouping import load_blocks
    from mlmpipe.masking import IGNORE, Masker, generator

    run: Run = request.getfixturevalue(run_name)
    run.check()
    model_dir = run.repo.path / "data/model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    prob = run.repo.read_json("data/model/training_params.json")["mlm_probability"]
    blocks = load_blocks(run.repo.path / "data/tokenized/train")
    ids = torch.as_tensor(np.asarray(blocks, dtype=np.int64))
    assert ids.ndim == 2 and ids.shape[0] > 100

    # Which pieces continue the word before them, from the piece strings themselves.
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = torch.zeros(len(tok), dtype=torch.bool)
    special[tok.all_special_ids] = True
    if run_name == "ww_wordpiece":
        cont_piece = torch.tensor([p.startswith("##") for p in pieces])
    else:  # byte-level BPE: a word starts with the space marker
        cont_piece = torch.tensor([not p.startswith("\u0120") for p in pieces]) & ~special
    cont = cont_piece[ids[:, 1:]] & ~special[ids[:, :-1]]  # position j+1 continues the word at j
    assert cont.sum() > 200, "the corpus should have plenty of multi-piece words"

    masker = Masker.from_tokenizer(tok, whole_word=True)
    _, labels = masker(ids, prob, generator(2024))
    chosen = labels != IGNORE
    assert not chosen[special[ids]].any()
    left, right = chosen[:, :-1][cont], chosen[:, 1:][cont]
    assert torch.equal(left, right), f"{int((left != right).sum())} word pieces masked apart from their word"
    assert (right & left).sum() > 20, "some multi-piece words should be masked as a whole"
    share = chosen.sum().item() / (~special[ids]).sum().item()
    assert abs(share - prob) <= 0.03, share


# ---------------------------------------------------------------------------------------------
# 5. A tokenizer kind that does not fit the architecture


def test_wordpiece_with_roberta_fails_before_any_stage(bert: Run, tmp_path):
    bert.check()
    repo = copy_repo(bert.repo, tmp_path / "repo")
    assert repo.params()["train_tokenizer"]["kind"] == "wordpiece"
    repo.set_params({"model.family": "roberta"})
    rc, out, err = repo.repro()
    assert rc != 0
    assert stages_run(out, with_check=True) == ["check_params"]  # the params alone decide it
    errors = error_lines(err + "\n" + out)
    assert len(errors) == 1, err[-3000:]
    assert "train_tokenizer.kind" in errors[0] and "model.family" in errors[0], errors[0]
    assert "wordpiece" in errors[0] and "roberta" in errors[0], errors[0]


# ---------------------------------------------------------------------------------------------
# The README's recipe table


def readme_recipe_rows() -> list[tuple[str, str, list[str]]]:
    """(first cell, command, -S overrides) of every ``dvc exp run`` row of the README's recipe table."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|(.*)\|\s*`(dvc exp run [^`]*)`\s*\|\s*$", line)
        if m:
            argv = shlex.split(m.group(2))
            rows.append((m.group(1).strip(), m.group(2),
                         [argv[i + 1] for i, a in enumerate(argv) if a in ("-S", "--set-param")]))
    return rows


def _row_id(cell: str) -> str:
    for key, rid in (("line_by_line", "line_by_line"), ("RoBERTa", "roberta"), ("next-sentence", "bert_nsp"),
                     ("BERT from scratch", "bert"), ("domain adaptation", "adaptation"),
                     ("whole-word", "whole_word"), ("GPU", "gpu")):
        if key in cell:
            return rid
    return cell[:20]


README_ROWS = {_row_id(cell): overrides for cell, _, overrides in readme_recipe_rows()}
README_LINES = {_row_id(cell): command for cell, command, _ in readme_recipe_rows()}
README_CKPT = "path/to/checkpoint"  # the README's placeholder: the tests put a checkpoint there
def test_readme_rows_are_the_tested_recipes():
    assert set(RECIPES) <= set(README_ROWS), README_ROWS
    for name, overrides in RECIPES.items():
        assert README_ROWS[name] == [o.format(ckpt=README_CKPT) for o in overrides], name


@pytest.mark.parametrize("row", list(README_ROWS))
def test_readme_row_overrides_give_valid_params(row, tmp_path):
    """Apply a row's overrides to params.yaml exactly as `dvc exp run -S` does; every section must parse."""
    from dvc.utils.hydra import apply_overrides

    from mlmpipe import params as P
    from mlmpipe.families import FAMILIES

    params_file = tmp_path / "params.yaml"
    shutil.copy2(PROJECT / "params.yaml", params_file)
    apply_overrides(params_file, README_ROWS[row])
    data = P.load_yaml(params_file.read_text(encoding="utf-8"))  # as DVC reads it
    for name in ("seed", *P.SECTIONS):
        P.section(data, name)
    tt, m = P.section(data, "train_tokenizer"), P.section(data, "model")
    if tt.from_dir is None:
        assert tt.kind in FAMILIES[m.family].kinds, (tt.kind, m.family)
    for o in README_ROWS[row]:
        key, value = o.lstrip("+").split("=", 1)
        section, field = key.split(".", 1)
        assert str(data[section][field]).lower() == value.lower(), o
