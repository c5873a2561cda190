"""Training checkpoints: written atomically every N steps, the newest one whose fingerprint (training
params that change the math, initial weights, data) matches and that the same training code wrote is resumed,
strictly (every weight, the optimizer, fp16's gradient scaler); cleared after a finished run. A checkpoint
holds whole states (sharding.py gathers them from FSDP's shards), so a run resumes with any number of
processes, sharded or not."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import sharding
from .outputs import atomic_dir
from .params import MlmpipeError, Pretrain

log = logging.getLogger(__name__)
BEST = "best.safetensors"  # in a checkpoint: the weights at the lowest validation loss so far (pretrain.keep_best)
# Params that change only logging or bookkeeping, not the trained weights.
NON_MATH = ("launcher", "log_every", "eval_every", "eval_blocks", "checkpoint_every", "keep_checkpoints",
            "num_threads", "compile", "attention_kernel", "resume_other_code")
# The library modules whose code shapes what training computes: a checkpoint written by other versions of them
# is not resumed (unless pretrain.resume_other_code). tests/test_dvc_deps.py keeps them among pretrain's deps.
TRAINING_CODE = ("batches.py", "checkpoints.py", "compute.py", "families.py", "grouping.py", "masking.py",
                 "model.py", "progress.py", "sharding.py", "training.py", "validation.py")
SCALER = "scaler.pt"  # in a checkpoint of an fp16 run: the gradient scaler's state


class CheckpointError(MlmpipeError):
    pass


def fingerprint(p: Pretrain, init_dir: str, data: np.ndarray | list) -> str:
    """What a checkpoint must match to be resumed: math-relevant params, initial weights, training data."""
    h = hashlib.sha256(json.dumps({k: v for k, v in asdict(p).items() if k not in NON_MATH}, sort_keys=True,
                                  default=str).encode())
    for f in sorted(Path(init_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    for arr in (data if isinstance(data, list) else [data]):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def code_fingerprint(files: tuple[str, ...] = TRAINING_CODE, package: Path = Path(__file__).parent) -> str:
    """A hash of the training code (``files`` of the package), so that a fix to it is not resumed over."""
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + (package / name).read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Found:
    """A complete checkpoint whose fingerprint matches, with its ``state.json`` as read (once)."""
    step: int
    dir: Path
    state: dict  # step, fingerprint and the ``extra`` it was saved with


class Checkpoints:
    """``step-NNNNNNN`` directories written atomically; the newest matching one is resumed."""

    def __init__(self, root: str, fp: str, keep: int, code: str | None = None, resume_other_code: bool = False):
        self.root, self.fp, self.keep = Path(root), fp, keep
        self.code, self.resume_other_code = code or code_fingerprint(), resume_other_code

    def save(self, step: int, model, optimizer, extra: dict | None = None, best: dict | None = None,
             scaler=None, main: bool = True) -> Path:
        """Every process calls it (sharded states are gathered from all); the ``main`` one writes.
        ``best``: the weights kept so far by ``pretrain.keep_best`` (saved beside the current ones);
        ``scaler``: fp16's gradient scaler, whose state a resumed run must continue from."""
        final = self.root / f"step-{step:07d}"
        weights, optim = sharding.model_state(model), sharding.optimizer_state(model, optimizer)
        if not main:
            return final
        with atomic_dir(final) as tmp:  # a ".step-….tmp-…" name, never taken for a complete checkpoint
            save_file(_untie(weights), tmp / "model.safetensors")
            if best is not None:
                save_file(_untie(best), tmp / BEST)
            torch.save(optim, tmp / "optimizer.pt")
            if scaler is not None:
                torch.save(scaler.state_dict(), tmp / SCALER)
            with open(tmp / "state.json", "w", encoding="utf-8") as fh:
                json.dump({"step": step, "fingerprint": self.fp, "code": self.code, **(extra or {})}, fh)
        for old in self.complete()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(d for d in self.root.iterdir() if re.fullmatch(r"step-\d{7}", d.name)
                      and (d / "state.json").exists())

    def latest(self) -> tuple[int, Path] | None:
        found = self.newest()
        return None if found is None else (found.step, found.dir)

    def newest(self) -> Found | None:
        """The newest complete checkpoint with this fingerprint; unreadable or foreign ones are skipped."""
        for d in reversed(self.complete()):
            try:
                with open(d / "state.json", encoding="utf-8") as fh:
                    state = json.load(fh)
            except (OSError, ValueError):
                log.warning("ignoring checkpoint %s: unreadable state.json", d)
                continue
            if state.get("fingerprint") != self.fp:
                log.warning("ignoring checkpoint %s: it was written with other training params or data", d)
                continue
            if state.get("code") != self.code:
                if not self.resume_other_code:
                    log.warning("ignoring checkpoint %s: it was written by other training code (%s); set "
                                "pretrain.resume_other_code: true to resume it anyway", d, ", ".join(TRAINING_CODE))
                    continue
                log.warning("resuming checkpoint %s although other training code wrote it "
                            "(pretrain.resume_other_code: true)", d)
            return Found(state["step"], d, state)
        return None

    @staticmethod
    def load_best(d: Path) -> dict | None:
        """The weights ``pretrain.keep_best`` had kept when checkpoint ``d`` was written, or None."""
        if not (d / BEST).is_file():
            return None
        try:
            return load_file(d / BEST)
        except Exception as e:
            raise CheckpointError(f"checkpoint {d} has a corrupt {BEST} ({type(e).__name__}); delete the "
                                  f"checkpoint and rerun") from None

    @staticmethod
    def load_scaler(d: Path, scaler) -> None:
        """Restore fp16's gradient scaler (its scale and growth tracker) from checkpoint ``d``."""
        if not (d / SCALER).is_file():
            raise CheckpointError(f"checkpoint {d} has no {SCALER} although the run uses fp16; delete it and rerun")
        scaler.load_state_dict(torch.load(d / SCALER, weights_only=True))

    @staticmethod
    def load(d: Path, model, optimizer) -> None:
        """Checkpoint ``d``'s weights and optimizer state into ``model`` and ``optimizer`` (sharded or not;
        every process reads the files), strictly: every weight of the model and no other."""
        try:
            weights = load_file(d / "model.safetensors")
            optim = torch.load(d / "optimizer.pt", weights_only=True, map_location="cpu")
        except Exception as e:  # safetensors raises many kinds on truncated files
            raise _corrupt(d, e) from None
        try:
            missing, unexpected = sharding.load(model, optimizer, weights, optim)
        except (KeyError, ValueError, RuntimeError) as e:  # an optimizer state of other parameters
            raise _corrupt(d, e) from None
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {d} does not fit the model: {len(missing)} weights missing "
                                  f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''}), "
                                  f"{len(unexpected)} unexpected; delete it and rerun")


def _corrupt(d: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"checkpoint {d} is corrupt or truncated ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); delete it and rerun")


def _untie(state: dict) -> dict:
    """safetensors refuses shared storage: clone tied tensors."""
    seen, out = set(), {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


ROOT_VARIABLE = "MLMPIPE_CHECKPOINTS"  # a checkpoint root that overrides paths.checkpoints


def run_dir(root: str, fp: str, environ=None) -> str:
    """Where a run with fingerprint ``fp`` keeps its checkpoints: ``<root>/<first 16 hex digits of fp>``, the
    root being $MLMPIPE_CHECKPOINTS if set, else ``root`` (paths.checkpoints; ``~`` expanded). Keyed by the
    fingerprint, runs that share a root outside the workspace (a queued or temporary experiment's) never
    pick up each other's checkpoints, and a killed one finds its own when rerun."""
    environ = os.environ if environ is None else environ
    base = environ.get(ROOT_VARIABLE) or root
    return str(Path(os.path.expanduser(base)) / fp[:16])


def clear_checkpoints(run: str) -> None:
    """After a finished run its checkpoints are spent: its directory goes (the root and other runs' stay)."""
    shutil.rmtree(run, ignore_errors=True)

