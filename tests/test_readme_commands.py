"""The README as an executable spec: every ``dvc exp run`` / ``dvc repro`` command it shows runs, as written.

Each command is taken from README.md itself (``readme_commands``) and run through bash in a tiny throwaway
repo, literally, with only step counts and sizes appended as ``-S`` overrides where the README's values are
meant for a real run. The recipe table's rows run in tests/test_recipes.py (the same way), the Experiments block in
tests/test_experiments.py, the torchrun launcher in tests/test_distributed.py, and the push/pull line in
tests/test_remote_pipeline.py;
``test_every_readme_command_is_run_somewhere`` keeps that list complete. The GPU launcher
(``--multi_gpu --num_processes 8``) needs CUDA devices: it is the only README command not run here.

Also here, because they need a finished run: a misspelled params section stops ``dvc repro`` even when
nothing else would rerun, and a valid change reruns only the stages that read it.
"""
from __future__ import annotations

import re

import pytest

from pipeline_repo import (PipelineRepo, make_repo, readme_command, readme_commands, run_readme, stages_run,
                           tiny_params)

pytestmark = pytest.mark.slow

TINY = ["pretrain.max_steps=4"]  # appended where the README's own step count is meant for a real run
ELSEWHERE = {  # README command (a distinctive part of it) -> the test that runs it literally
    "model.family=roberta -S model.intermediate=1024": "tests/test_recipes.py",
    "train_tokenizer.lowercase=true": "tests/test_recipes.py",
    "build_model.init=pretrained": "tests/test_recipes.py",
    "pretrain.whole_word=true": "tests/test_recipes.py",
    "torchrun --standalone --nproc_per_node 2": "tests/test_distributed.py",  # DDP and FSDP (pretrain.fsdp=true)
    "pretrain.lr=0.003 ": "tests/test_experiments.py",
    "--queue -S 'pretrain.lr=": "tests/test_experiments.py",
    "dvc push && git push": "tests/test_remote_pipeline.py",
}
GPU_ONLY = ("--multi_gpu --num_processes 8",)
HERE = ("make repro", "fill_mask_report.model_name=", "time dvc repro", "pretrain.lr=2e-5 -S pretrain.warmup_steps=0", "fetch_corpus.train_extra=", "model.preset=base")


def ok(result: tuple[int, str, str], what: str) -> str:
    rc, out, err = result
    assert rc == 0, f"{what} failed ({rc}):\n{out[-3000:]}\n{err[-3000:]}"
    return out


def test_every_readme_command_is_run_somewhere():
    commands = readme_commands()
    assert len(commands) > 15, commands
    for cmd in commands:
        bare = re.sub(r"\s+#\s.*$", "", cmd) in ("dvc repro", "dvc exp run")  # run by test_repro_up_to_date
        assert bare or any(k in cmd for k in (*ELSEWHERE, *GPU_ONLY, *HERE)), f"not run by any test: {cmd!r}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> PipelineRepo:
    repo = make_repo(tmp_path_factory.mktemp("readme") / "repo",
                     tiny_params(pretrain={"max_steps": 4, "eval_every": 2, "log_every": 2}))
    out = ok(run_readme(repo, "dvc repro"), "dvc repro")
    assert stages_run(out, with_check=True)[0] == "check_params"
    ok(repo.git("add", "-A"), "git add")
    ok(repo.git("commit", "-q", "-m", "pipeline run"), "git commit")
    return repo


def test_repro_up_to_date(repo: PipelineRepo):
    for cmd in (readme_command('"Data and pipelines are up to date."'), "time dvc repro", "dvc repro"):
        assert cmd in readme_commands()
        rc, out, err = run_readme(repo, cmd)
        assert rc == 0 and "Data and pipelines are up to date." in out, (cmd, out, err)
    assert "dvc exp run" in readme_commands()
    assert stages_run(ok(run_readme(repo, "dvc exp run"), "dvc exp run"), with_check=True) == []


def test_misspelled_section_stops_repro_when_nothing_else_would_rerun(repo: PipelineRepo):
    good = repo.params_file.read_text(encoding="utf-8")
    try:
        repo.params_file.write_text(good + "\npretrian:\n  lr: 0.001\n", encoding="utf-8")
        for argv in (("repro",), ("exp", "run")):
            rc, out, err = repo.dvc(*argv)
            assert rc != 0, (argv, out, err)
            assert stages_run(out, with_check=True) == ["check_params"], out
            errors = [ln for ln in (out + err).splitlines() if ln.startswith("error:")]
            assert errors == ["error: params.yaml: unknown section 'pretrian'; allowed: build_model, evaluate, "
                              "fetch_corpus, fill_mask_report, model, paths, pretrain, seed, tokenize_group, "
                              "train_tokenizer"], out + err
            assert "Traceback" not in out + err
        repo.params_file.write_text(good.replace("  lr: 0.002", "  lrr: 0.002"), encoding="utf-8")
        rc, out, err = repo.dvc("repro")
        assert rc != 0 and "error: pretrain.lrr: unknown key; allowed keys are" in err, err
    finally:
        repo.params_file.write_text(good, encoding="utf-8")
    # DVC removed the stamp before the failed check; the check writes it again, the same bytes, so nothing reruns
    assert stages_run(ok(repo.dvc("repro"), "dvc repro"), with_check=True) == ["check_params"]
    assert "Data and pipelines are up to date." in ok(repo.dvc("repro"), "dvc repro")


def test_a_valid_change_reruns_only_the_stages_that_read_it(repo: PipelineRepo):
    before = repo.set_params({"evaluate.seed": 99})
    try:
        out = ok(repo.dvc("repro"), "dvc repro")
        # evaluate, and the report whose model card states its results; not the model
        assert stages_run(out, with_check=True) == ["check_params", "evaluate", "fill_mask_report"], out
    finally:
        repo.write_params(before)
        ok(repo.dvc("repro"), "dvc repro")
        ok(repo.git("checkout", "--", "."), "git checkout")


def test_learning_rate_in_scientific_notation(repo: PipelineRepo):
    """The HF course's learning rate typed the README's way: DVC writes `lr: 2e-05`, a number for DVC and us."""
    cmd = readme_command("pretrain.lr=2e-5 -S pretrain.warmup_steps=0")
    out = ok(run_readme(repo, cmd), cmd)
    assert stages_run(out) == ["pretrain", "evaluate", "fill_mask_report"], out
    assert re.search(r"^  lr: 2e-0?5$", repo.params_file.read_text(encoding="utf-8"), re.M)
    assert repo.read_json("data/model/training_params.json")["lr"] == 2e-5
    diff = ok(repo.dvc("params", "diff", "--json"), "dvc params diff")
    assert '"new": 2e-05' in diff.replace(" ", "").replace('"new":', '"new": '), diff


def test_gpu_recipe_row_with_tiny_sizes(repo: PipelineRepo):
    """The GPU row as written, then only its sizes and step count brought down to tiny data."""
    cmd = readme_command("model.preset=base")
    out = ok(run_readme(repo, cmd, ["model.preset=tiny", "tokenize_group.block_size=32", "pretrain.batch_size=8",
                                    *TINY]), cmd)
    assert stages_run(out) == ["build_model", "pretrain", "evaluate", "fill_mask_report"], out  # block 32 as before
    p = repo.params()
    assert p["pretrain"]["lr"] == 0.0006 and p["model"]["preset"] == "tiny"


def test_train_extra(repo: PipelineRepo):
    cmd = readme_command("fetch_corpus.train_extra=")
    out = ok(run_readme(repo, cmd), cmd)
    assert stages_run(out)[:2] == ["fetch_corpus", "train_tokenizer"], out
    corpus = repo.read_json("metrics/details/corpus.json")
    assert corpus["train_documents"] > 1000, corpus  # the stdlib docstrings joined the training split


def test_model_card_and_artifact(repo: PipelineRepo, tmp_path):
    """The Publishing section's command: a named, licensed card in data/release, which loads as a Hugging Face
    folder and which `dvc artifacts get` fetches by the artifact name dvc.yaml gives it."""
    from huggingface_hub import ModelCard
    from transformers import pipeline

    cmd = readme_command("fill_mask_report.model_name=")
    out = ok(run_readme(repo, cmd), cmd)
    assert stages_run(out) == ["fill_mask_report"], out  # the card's params rerun only the report
    release = repo.path / "data" / "release"
    data = ModelCard.load(release / "README.md").data
    assert (data.model_name, data.license, data.language) == ("python-docs-mlm", "apache-2.0", "en")
    evaluation = repo.read_json("metrics/details/eval.json")
    ppl = next(r.metric_value for r in data.eval_results if r.metric_type == "perplexity")
    assert ppl == round(evaluation["perplexity"], 4)
    fill = pipeline("fill-mask", model=str(release), device="cpu", top_k=2)
    assert len(fill(f"The {fill.tokenizer.mask_token} statement.")) == 2
    assert {p.name for p in (repo.path / "data" / "model").iterdir()} | {"README.md"} == {
        p.name for p in release.iterdir()}
    ok(repo.git("add", "-A"), "git add")
    ok(repo.git("commit", "-q", "-m", "named card"), "git commit")
    ok(repo.git("tag", "-a", "mlm@v1.0.0", "-m", "mlm v1.0.0"), "git tag")  # the README's, without the push
    got = tmp_path / "mlm"
    ok(repo.dvc("artifacts", "get", str(repo.path), "mlm", "-o", str(got)), "dvc artifacts get")
    assert (got / "README.md").read_bytes() == (release / "README.md").read_bytes()
    assert (got / "model.safetensors").read_bytes() == (release / "model.safetensors").read_bytes()
