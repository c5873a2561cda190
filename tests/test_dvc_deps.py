"""dvc.yaml lists, for every stage, exactly the code the stage runs: its own module, stages/_stage.py and
every library module it imports directly or through another library module. A missing entry would let a
library change skip a stage that runs it; an extra one would rerun a stage for code it never runs."""
import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "src" / "mlmpipe"


def imported_files(path: Path) -> set[str]:
    """Project files imported by ``path`` (a stage or a library module), as repo-relative paths."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module == "_stage":
                found.add("stages/_stage.py")
            elif node.level == 0 and node.module == "mlmpipe" or node.level == 1 and node.module is None:
                found.update(f"src/mlmpipe/{a.name}.py" for a in node.names)
            elif node.level == 0 and (node.module or "").startswith("mlmpipe."):
                found.add(f"src/mlmpipe/{node.module.split('.')[1]}.py")
            elif node.level == 1:
                found.add(f"src/mlmpipe/{node.module.split('.')[0]}.py")
        elif isinstance(node, ast.Import):
            found.update(f"src/mlmpipe/{a.name.split('.')[1]}.py" for a in node.names
                         if a.name.startswith("mlmpipe."))
    return {f for f in found if (ROOT / f).is_file()}


def closure(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for f in imported_files(ROOT / todo.pop()) - seen:
            seen.add(f)
            todo.append(f)
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_code_deps_are_exactly_the_code_it_runs(name):
    code = {d for d in STAGES[name]["deps"] if d.endswith(".py")}
    assert code == closure(f"stages/{name}.py")


def test_every_library_module_is_some_stage_dep():
    used = set().union(*(closure(f"stages/{n}.py") for n in STAGES))
    assert {f"src/mlmpipe/{p.name}" for p in LIB.glob("*.py") if p.name != "__init__.py"} <= used


# Code that one stage alone runs, by design: a change there reruns that stage (and the stages that read its
# outputs), never one beside or before it. evaluate's metrics are not pretrain's (training's validation pass
# is validation.py), so editing a metric does not retrain the model; build_model's own code reaches pretrain
# only through the initial weights it writes.
STAGE_ONLY = {
    "src/mlmpipe/evaluation.py": "evaluate",
    "stages/build_model.py": "build_model",
    "src/mlmpipe/model_info.py": "build_model",
}


@pytest.mark.parametrize("module", list(STAGE_ONLY))
def test_stage_only_code_is_no_other_stages_dependency(module):
    owner = STAGE_ONLY[module]
    assert module in STAGES[owner]["deps"] and module in closure(f"stages/{owner}.py")
    assert [n for n in STAGES if n != owner and module in STAGES[n]["deps"]] == []
    assert [n for n in STAGES if n != owner and module in closure(f"stages/{n}.py")] == []


def test_pretrain_runs_no_evaluate_or_build_only_code():
    deps = set(STAGES["pretrain"]["deps"]) | closure("stages/pretrain.py")
    assert "src/mlmpipe/validation.py" in deps  # what training needs for its validation curve
    assert deps.isdisjoint(STAGE_ONLY), sorted(deps & set(STAGE_ONLY))


def test_the_model_artifact_is_the_release_folder():
    """DVC does not template `artifacts:`; its path must still be the one params.yaml gives the release folder."""
    from mlmpipe.params import read_params

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    release = read_params(ROOT / "params.yaml")["paths"]["release"]
    assert spec["artifacts"]["mlm"] == {**spec["artifacts"]["mlm"], "path": release, "type": "model"}
    assert "${paths.release}" in spec["stages"]["fill_mask_report"]["outs"]


def test_the_checkpointed_training_code_is_pretrain_code():
    """The modules whose change makes a checkpoint stale are pretrain dependencies (so they also rerun it)."""
    from mlmpipe.checkpoints import TRAINING_CODE

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["pretrain"]["deps"]
    assert {f"src/mlmpipe/{name}" for name in TRAINING_CODE} <= set(deps)
