"""Each benchmark measurement runs in a fresh Python process: accelerate keeps one global state per
process, and a fresh process starts like a real run (cold allocator, no earlier compiled kernels).

The benchmark script re-runs itself with ``--_worker SIDE --_spec FILE --_out FILE``; ``serve`` runs the
side's worker function on the spec there and writes its result as JSON, ``run`` starts it from the parent
and reads the result back.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def add_args(ap: argparse.ArgumentParser, sides: tuple) -> None:
    ap.add_argument("--_worker", choices=sides, help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)


def serve(a: argparse.Namespace, workers: dict[str, Callable[[dict], dict]]) -> bool:
    """In a worker process (``--_worker`` given): run the side's worker and write its result; returns
    whether it did (False in the parent)."""
    if not a._worker:
        return False
    spec = json.loads(Path(a._spec).read_text())
    Path(a._out).write_text(json.dumps(workers[a._worker](spec)))
    return True


def run(script: str, side: str, spec: dict, name: str | None = None, cpu_only: bool = True,
        capture: bool = True) -> dict:
    """Run ``script --_worker side`` on ``spec`` in a fresh process; its result with ``wall_s`` added.
    ``capture``: keep the worker's output and show its tail only if it fails (else it streams through)."""
    with tempfile.TemporaryDirectory(prefix="bench_run_") as t:
        spec_file, out_file = Path(t) / "spec.json", Path(t) / "out.json"
        spec_file.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE),
                                                             os.environ.get("PYTHONPATH", "")])}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if cpu_only:
            env["CUDA_VISIBLE_DEVICES"] = ""
        cmd = [sys.executable, str(Path(script).resolve()), "--_worker", side, "--_spec", str(spec_file),
               "--_out", str(out_file)]
        t0 = time.perf_counter()
        out = subprocess.PIPE if capture else None
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if capture else None, text=True)
        if proc.returncode != 0 or not out_file.exists():
            if capture:
                print(proc.stdout[-4000:], file=sys.stderr)
            raise SystemExit(f"{name or side}: worker failed (exit {proc.returncode})")
        result = json.loads(out_file.read_text())
        result["wall_s"] = time.perf_counter() - t0
        return result
