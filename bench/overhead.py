"""Pipeline overhead: `dvc repro` with nothing changed, and after a change to an evaluate-only param.

    make repro                                  # first: the default pipeline, up to date
    .venv/bin/python bench/overhead.py

Works on a copy of this checkout (git, params, outputs; the DVC cache hard-linked), so the project's own
params.yaml and dvc.lock are never touched. Prints the median of ``--repeats`` no-op runs and the stages
and wall time of the evaluate-only change; targets: <= 1.5 s and <= 30 s with no training.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DVC = str(ROOT / ".venv" / "bin" / "dvc")


def dvc(cwd: Path, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return dt, proc.stdout + proc.stderr


def copy_checkout(dest: Path) -> None:
    skip = {".venv", "bench/out", ".dvc/cache", ".dvc/tmp"}

    def ignore(d, names):
        rel = Path(d).relative_to(ROOT)
        return [n for n in names if str(rel / n) in skip or (str(rel) == "." and n in skip)]

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    os.symlink(ROOT / ".venv", dest / ".venv")
    if (ROOT / ".dvc" / "cache").is_dir():
        shutil.copytree(ROOT / ".dvc" / "cache", dest / ".dvc" / "cache", copy_function=os.link)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    _, status = dvc(ROOT, "status")
    if "up to date" not in status:
        raise SystemExit("the pipeline is not up to date here: run `make repro` first\n" + status)
    with tempfile.TemporaryDirectory(prefix="overhead_") as t:
        work = Path(t) / "repo"
        copy_checkout(work)
        dvc(work, "repro")  # the first call in a new place may refresh DVC's state (hashes by inode and mtime)
        noop = [dvc(work, "repro")[0] for _ in range(a.repeats)]
        params = (work / "params.yaml").read_text(encoding="utf-8")
        changed = re.sub(r"(?m)^(evaluate:\n(?:  .*\n)*?  batch_size: )(\d+)", lambda m: m.group(1) + "16", params)
        assert changed != params, "evaluate.batch_size not found in params.yaml"
        (work / "params.yaml").write_text(changed, encoding="utf-8")
        dt, out = dvc(work, "repro")
        ran = re.findall(r"Running stage '([^']+)'", out)
    print(f"no-op `dvc repro` (7 stages up to date): median {statistics.median(noop):.2f} s over {a.repeats} "
          f"(min {min(noop):.2f}, max {max(noop):.2f}); target <= 1.5 s")
    print(f"evaluate.batch_size 32 -> 16: `dvc repro` ran {ran} in {dt:.1f} s; target <= 30 s, no training")
    print(f"noop_s={statistics.median(noop):.2f} evaluate_change_s={dt:.1f} stages={','.join(ran)}")
    sys.exit(0 if "pretrain" not in ran else 1)


if __name__ == "__main__":
    main()
