"""A throwaway git + DVC repo of this project with tiny params, for end-to-end tests.

    repo = make_repo(tmp_path / "repo")            # copy the project, tiny params, git init, dvc init, commit
    rc, out, err = repo.repro()                     # `dvc repro` with the venv first on PATH
    assert stages_run(out) == set(STAGES)
    repo.set_params({"pretrain.lr": 0.01})          # yaml round-trip edit of params.yaml
    rc, out, err = repo.stage("tokenize_group")     # `python stages/tokenize_group.py`

``tiny_params(...)`` returns the params mapping (same structure as the real params.yaml) so that
variants can be derived, e.g. ``tiny_params(family="bert", kind="wordpiece")``.

The copied ``src/`` is put first on ``PYTHONPATH``, so stages in the temporary repo run the
library files that were copied (the same ones as the checkout's at copy time). Everything runs
offline (``HF_HUB_OFFLINE=1``): nothing loads from the Hub.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

from corpora import corpus_text

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = PROJECT / ".venv" / "bin"
STAGES = ("fetch_corpus", "train_tokenizer", "tokenize_group", "build_model", "pretrain", "evaluate",
          "fill_mask_report")
CORPUS_FILE = "data/raw/tiny.txt"
GIT_ID = {
    "GIT_AUTHOR_NAME": "mlmpipe tests",
    "GIT_AUTHOR_EMAIL": "tests@mlmpipe.invalid",
    "GIT_COMMITTER_NAME": "mlmpipe tests",
    "GIT_COMMITTER_EMAIL": "tests@mlmpipe.invalid",
}

# ---------------------------------------------------------------------------------------------
# tiny params


# What the tiny pipeline changes from the project's params.yaml (everything else is params.yaml's own value).
TINY = {
    "fetch_corpus": {"max_documents": 200, "validation_fraction": 0.1},
    "train_tokenizer": {"vocab_size": 300},
    "tokenize_group": {"block_size": 32},
    "model": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64},
    "pretrain": {"warmup_steps": 2, "max_steps": 10, "batch_size": 8, "mlm_probability": 0.15, "log_every": 5,
                 "eval_every": 5, "checkpoint_every": 5,
                 "random_offsets": False,  # fixed cuts of the blocks: the tiny tests reason about them
                 "num_threads": 1},  # tiny matmuls gain nothing from a second thread, and tests run in pairs
    "evaluate": {"passes": 1},
    "fill_mask_report": {"top_k": 3, "prompts": [
        {"text": "The baker sold <mask> warm coat.", "answers": ["a"]},
        {"text": "My neighbour found the map near the <mask>.", "answers": ["river"]},
    ]},
}


def tiny_params(*, family: str = "modernbert", kind: Optional[str] = None, source: str = CORPUS_FILE,
                **sections: Mapping[str, Any]) -> dict:
    """The project's params.yaml with ``TINY``'s changes, sized for a ~30 s `dvc repro`: every key is there (so
    `dvc exp run -S key=...` can set any key, as in the project), in params.yaml's order.

    ``family`` picks model.family and, unless ``kind`` is given, the tokenizer kind it usually takes
    (the first of its record's ``kinds``: bert/distilbert wordpiece, roberta/modernbert bpe). Keyword sections
    (``pretrain={...}``) are merged key by key; a value that is not a mapping replaces the section.
    """
    from mlmpipe.families import FAMILIES
    from mlmpipe.params import load_yaml

    p = load_yaml((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    changes = [TINY, {"fetch_corpus": {"source": source}, "train_tokenizer": {"kind": kind or FAMILIES[family].kinds[0]},
                      "model": {"family": family}}, sections]
    for change in changes:
        for name, values in change.items():
            if isinstance(values, Mapping) and isinstance(p.get(name), dict):
                p[name] = {**p[name], **copy.deepcopy(dict(values))}
            else:
                p[name] = copy.deepcopy(values)
    return p


def dump_params(params: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(params), sort_keys=False, default_flow_style=False, allow_unicode=True)


def set_dotted(params: dict, key: str, value: Any) -> None:
    """``set_dotted(p, "pretrain.lr", 0.01)``; a missing intermediate section is created."""
    *parents, last = key.split(".")
    node = params
    for k in parents:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[last] = value


_DELETE = object()
DELETE = _DELETE  # set_params({"model.dropout": DELETE}) removes the key


# ---------------------------------------------------------------------------------------------
# the repo


def venv_env(extra: Optional[Mapping[str, str]] = None, src: Optional[Path] = None) -> dict:
    """os.environ with the venv first on PATH, offline Hugging Face, no DVC analytics, a git identity."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    env.pop("MLMPIPE_PARAMS", None)
    if src is not None:
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "DVC_NO_ANALYTICS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONHASHSEED": "0", **GIT_ID})
    # One compute thread per process (torch's pool outside pretrain, which follows pretrain.num_threads): the
    # suite runs two tests side by side on two cores, and spinning thread pools only slow each other there.
    env.setdefault("OMP_NUM_THREADS", "1")
    if extra:
        env.update(extra)
    return env


class PipelineRepo:
    def __init__(self, path: Path):
        self.path = Path(path)

    # -- running things --------------------------------------------------------------------
    def env(self, extra: Optional[Mapping[str, str]] = None) -> dict:
        return venv_env(extra, src=self.path / "src")

    def run(self, *argv: str, env: Optional[Mapping[str, str]] = None, timeout: float = 600,
            input: Optional[str] = None) -> tuple[int, str, str]:
        """Run ``argv`` in the repo; returns (returncode, stdout, stderr)."""
        proc = subprocess.run(list(argv), cwd=self.path, env=self.env(env), capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        return proc.returncode, proc.stdout, proc.stderr

    def dvc(self, *args: str, **kw) -> tuple[int, str, str]:
        return self.run(str(VENV_BIN / "dvc"), *args, **kw)

    def repro(self, *args: str, **kw) -> tuple[int, str, str]:
        return self.dvc("repro", *args, **kw)

    def stage(self, name: str, **kw) -> tuple[int, str, str]:
        """Run one stage script directly (``python stages/<name>.py``), outside DVC."""
        return self.run(str(VENV_BIN / "python"), f"stages/{name}.py", **kw)

    def git(self, *args: str, **kw) -> tuple[int, str, str]:
        return self.run("git", *args, **kw)

    def copy(self, dest: Path, params: Optional[Mapping[str, Any]] = None) -> "PipelineRepo":
        """This repo, as it stands (git, DVC cache, outputs and lock), copied to ``dest``; with ``params`` written
        as its params.yaml. Runs that differ only after a stage share what comes before it: build it once, copy
        it, and each copy's `dvc repro` reruns only the stages the new params change."""
        dvc_dir = str(self.path / ".dvc")
        shutil.copytree(self.path, dest, symlinks=True,
                        ignore=lambda d, names: ["tmp"] if d == dvc_dir else [])  # DVC's locks and queue stay
        repo = PipelineRepo(dest)
        if params is not None:
            repo.write_params(params)
        return repo

    # -- params ----------------------------------------------------------------------------
    @property
    def params_file(self) -> Path:
        return self.path / "params.yaml"

    def params(self) -> dict:
        return yaml.safe_load(self.params_file.read_text(encoding="utf-8"))

    def write_params(self, params: Mapping[str, Any]) -> None:
        self.params_file.write_text(dump_params(params), encoding="utf-8")

    def set_params(self, changes: Mapping[str, Any]) -> dict:
        """Apply dotted-key changes (``{"pretrain.lr": 0.01}``; value ``DELETE`` removes a key) to
        params.yaml; returns the previous params mapping (pass it to ``write_params`` to restore)."""
        before = self.params()
        after = copy.deepcopy(before)
        for key, value in changes.items():
            if value is _DELETE:
                *parents, last = key.split(".")
                node = after
                for k in parents:
                    node = node[k]
                node.pop(last, None)
            else:
                set_dotted(after, key, value)
        self.write_params(after)
        return before

    # -- outputs ---------------------------------------------------------------------------
    def read_json(self, rel: str) -> Any:
        import json

        return json.loads((self.path / rel).read_text(encoding="utf-8"))

    def tree_hashes(self, rel: str) -> dict[str, str]:
        """{relative file path: sha256} of every file under ``rel`` (a file or a directory); {} if absent."""
        return tree_hashes(self.path / rel)


def tree_hashes(root: Path) -> dict[str, str]:
    root = Path(root)
    if root.is_file():
        return {root.name: _sha256(root)}
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")


def make_repo(dest: Path, params: Optional[Mapping[str, Any]] = None, *, corpus: Optional[str] = None,
              commit: bool = True, corpus_in_git: bool = True) -> PipelineRepo:
    """Create a git + DVC repo at ``dest`` from this project with ``params`` (default ``tiny_params()``).

    Copies dvc.yaml, stages/, src/, data/raw/README.md, .gitignore, .dvc/config and .dvc/plots/; writes the tiny
    corpus to data/raw/tiny.txt (``corpus`` overrides its text); runs ``git init`` and ``dvc init``
    and, with ``commit``, commits everything (the corpus force-added, since .gitignore ignores
    data/raw/*, unless ``corpus_in_git`` is false) so that a clone has the pipeline's input too.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    repo = PipelineRepo(dest)
    shutil.copy2(PROJECT / "dvc.yaml", dest / "dvc.yaml")
    shutil.copy2(PROJECT / ".gitignore", dest / ".gitignore")
    shutil.copytree(PROJECT / "stages", dest / "stages", ignore=_IGNORE)
    shutil.copytree(PROJECT / "src", dest / "src", ignore=_IGNORE)
    (dest / "data" / "raw").mkdir(parents=True)
    shutil.copy2(PROJECT / "data" / "raw" / "README.md", dest / "data" / "raw" / "README.md")
    (dest / CORPUS_FILE).write_text(corpus_text("everyday") if corpus is None else corpus, encoding="utf-8")
    repo.write_params(tiny_params() if params is None else params)

    _check(repo.git("init", "-q", "-b", "main"), "git init")
    _check(repo.dvc("init", "-q"), "dvc init")
    shutil.copy2(PROJECT / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copytree(PROJECT / ".dvc" / "plots", dest / ".dvc" / "plots")  # the project's plot templates
    if commit:
        _check(repo.git("add", "-A"), "git add")
        if corpus_in_git:
            _check(repo.git("add", "-f", CORPUS_FILE), "git add corpus")
        _check(repo.git("commit", "-q", "-m", "tiny mlmpipe pipeline"), "git commit")
    return repo


PRETRAIN_INPUTS = ("tokenize_group", "build_model")  # the stages whose outputs pretrain reads (and theirs before)


def make_pretrain_ready(dest: Path, params: Optional[Mapping[str, Any]] = None) -> PipelineRepo:
    """``make_repo`` with the stages before pretrain run: a repo to ``copy`` for runs that differ from pretrain on."""
    repo = make_repo(dest, params)
    _check(repo.repro(*PRETRAIN_INPUTS), f"dvc repro {' '.join(PRETRAIN_INPUTS)}")
    return repo


def _check(result: tuple[int, str, str], what: str) -> None:
    rc, out, err = result
    if rc != 0:
        raise RuntimeError(f"{what} failed ({rc}):\n{out}\n{err}")


_RUNNING = re.compile(r"^Running stage '([^']+)'", re.M)
CHECK_STAGE = "check_params"  # validates params.yaml; reruns on any params change, so stages_run leaves it out


def stages_run(output: str, *, with_check: bool = False) -> list[str]:
    """The pipeline stages `dvc repro` ran, in order, from its "Running stage 'X':" lines (the params check
    too with ``with_check``)."""
    return [s for s in _RUNNING.findall(output) if with_check or s != CHECK_STAGE]


# ---------------------------------------------------------------------------------------------
# the README's commands, run literally


def readme_commands() -> list[str]:
    """Every line or inline command of README.md that runs ``dvc exp run`` or ``dvc repro``, as written."""
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        found += [ln for ln in block.splitlines() if re.search(r"\bdvc (exp run|repro)\b", ln)]
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [span for span in re.findall(r"`([^`\n]+)`", outside) if re.search(r"\bdvc (exp run|repro)\b", span)]
    return list(dict.fromkeys(found))


def readme_command(*needles: str) -> str:
    """The one README command that contains every string in ``needles``."""
    hits = [c for c in readme_commands() if all(n in c for n in needles)]
    assert len(hits) == 1, f"README commands with {needles}: {hits}"
    return hits[0]


def run_readme(repo: "PipelineRepo", command: str, overrides: Iterable[str] = (), **kw) -> tuple[int, str, str]:
    """Run a README command line in ``repo`` through bash exactly as written (its trailing comment dropped),
    with ``overrides`` (only step counts and sizes, to fit tiny data) appended as ``-S`` options."""
    line = re.sub(r"\s+#\s.*$", "", command)
    line += "".join(f" -S {shlex.quote(o)}" for o in overrides)
    return repo.run("bash", "-c", line, **kw)


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (stripped), or ''."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def snapshot(repo: PipelineRepo, rels: Iterable[str]) -> dict[str, dict[str, str]]:
    return {rel: repo.tree_hashes(rel) for rel in rels}
