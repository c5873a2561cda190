"""Memory and speed of the data stages on a big text corpus (default 200 MB).

    .venv/bin/python bench/corpus_scale.py            # 200 MB
    .venv/bin/python bench/corpus_scale.py --mb 20    # quicker

Builds a ``--mb`` MB .txt corpus by repeating the default corpus (Python's documentation topics)
with variations, so that dedupe keeps every copy: each copy shuffles the sentences of every
paragraph and ends it with a copy number in words. Then, in a temporary project directory whose
params.yaml points ``fetch_corpus.source`` at that file, runs the stage scripts
``fetch_corpus``, ``train_tokenizer`` and ``tokenize_group`` one after the other, each in its own
process, and prints per stage: wall time, MB/s of corpus text, and peak RSS, both of the stage's
process tree (sampled every 50 ms, summed over children) and the kernel's exact maximum for the
largest single process (wait4 ru_maxrss). The target: no stage passes about 2 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

LIMIT_MB = 2048
STAGES = ("fetch_corpus", "train_tokenizer", "tokenize_group")

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for 0 <= n < 10**9 (variation text that looks like prose to the tokenizer)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in ((10 ** 6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_words(n // size) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise ValueError(n)


def build_corpus(path: Path, mb: float, seed: int = 0) -> dict:
    """Write about ``mb`` MB (10^6 bytes) of paragraph-separated text; return counts."""
    from mlmpipe import corpus, sources

    base = list(corpus.clean(sources.builtin_python_docs(), 40, True, None))
    split = [re.split(r"(?<=[.!?])\s+", d) for d in base]
    target = int(mb * 1e6)
    written = docs = copies = 0
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            tag = f" (Copy {number_words(copies)}.)" if copies else ""
            for sentences in split:
                if copies:
                    sentences = sentences[:]
                    rng.shuffle(sentences)
                text = " ".join(sentences) + tag + "\n\n"
                fh.write(text)
                written += len(text.encode("utf-8"))
                docs += 1
                if written >= target:
                    break
            copies += 1
    return {"bytes": written, "documents": docs, "copies": copies, "base_documents": len(base)}


def project_params(corpus_file: Path, vocab: int | None) -> dict:
    """The repo's params.yaml sections the three stages read, with the source pointed at ``corpus_file``."""
    import yaml

    from mlmpipe import params as P

    try:
        data = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    out = {"seed": data.get("seed", 42), "paths": {"corpus": "data/corpus", "tokenizer": "data/tokenizer",
                                                   "tokenized": "data/tokenized", "metrics": "metrics"}}
    for name in ("fetch_corpus", "train_tokenizer", "tokenize_group"):
        section = dict(data.get(name) or {})
        try:
            P.section({name: section}, name)
        except P.MlmpipeError:
            section = {}  # the repo's params.yaml is mid-edit: use the defaults
        out[name] = section
    out["fetch_corpus"].update({"source": str(corpus_file), "format": "txt", "txt_mode": "paragraph"})
    out["fetch_corpus"].pop("validation_source", None)
    out["fetch_corpus"].pop("max_documents", None)
    out["train_tokenizer"].pop("from", None)
    if vocab:
        out["train_tokenizer"]["vocab_size"] = vocab
    return out


def tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_stage(stage: str, cwd: Path, log: Path, interval: float = 0.05) -> dict:
    """Run ``stages/<stage>.py`` with ``cwd`` as the project root; sample the process tree's RSS."""
    import psutil

    env = dict(os.environ, MLMPIPE_LOG=os.environ.get("MLMPIPE_LOG", "INFO"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        popen = subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=cwd, env=env,
                                 stdout=fh, stderr=subprocess.STDOUT)
        ps = psutil.Process(popen.pid)
        peak_tree, samples = 0, 0
        while True:
            pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, tree_rss(ps))
            samples += 1
            time.sleep(interval)
    wall = time.perf_counter() - t0
    popen.returncode = os.waitstatus_to_exitcode(status)
    return {"stage": stage, "rc": popen.returncode, "wall_s": wall, "peak_tree_rss_mb": peak_tree / 2 ** 20,
            "maxrss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime, "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="corpus size in MB (10^6 bytes)")
    ap.add_argument("--vocab", type=int, default=None, help="train_tokenizer.vocab_size (default: params.yaml's)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--limit-mb", type=float, default=LIMIT_MB, help="RSS budget to check each stage against")
    a = ap.parse_args()

    import yaml

    work = Path(a.dir or tempfile.mkdtemp(prefix="bench_corpus_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"# corpus scale benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}; {os.cpu_count()} CPUs; load "
              f"average {os.getloadavg()[0]:.2f} (the machine may be shared with other jobs); work dir {work}")
        corpus_file = work / "corpus.txt"
        t0 = time.perf_counter()
        info = build_corpus(corpus_file, a.mb)
        mb = info["bytes"] / 1e6
        print(f"corpus: {corpus_file.name}, {mb:.1f} MB, {info['documents']:,} paragraphs = {info['copies']} varied "
              f"copies of the {info['base_documents']} default documents (built in {time.perf_counter() - t0:.1f} s)")
        project = work / "project"
        project.mkdir(exist_ok=True)
        params = project_params(corpus_file, a.vocab)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        print(f"params: fetch_corpus {json.dumps(params['fetch_corpus'])}; train_tokenizer "
              f"{json.dumps(params['train_tokenizer'])}; tokenize_group {json.dumps(params['tokenize_group'])}")
        results = []
        for stage in STAGES:
            r = run_stage(stage, project, work / f"{stage}.log")
            results.append(r)
            verdict = "ok" if max(r["peak_tree_rss_mb"], r["maxrss_mb"]) < a.limit_mb else f"OVER {a.limit_mb:.0f} MB"
            print(f"stage {stage:<16} wall {r['wall_s']:7.1f} s  {mb / r['wall_s']:6.2f} MB/s  peak RSS: tree "
                  f"{r['peak_tree_rss_mb']:6.0f} MB, max process {r['maxrss_mb']:6.0f} MB  cpu {r['cpu_s']:.0f} s  "
                  f"[{verdict}]")
            if r["rc"] != 0:
                print((work / f"{stage}.log").read_text()[-3000:], file=sys.stderr)
                raise SystemExit(f"{stage} failed (exit {r['rc']}); log: {work / f'{stage}.log'}")
        metrics = {}
        for name in ("corpus", "tokenizer", "tokenized"):
            f = project / "metrics" / f"{name}.json"
            if f.exists():
                metrics[name] = json.loads(f.read_text())
        c, t, g = metrics.get("corpus", {}), metrics.get("tokenizer", {}), metrics.get("tokenized", {})
        print(f"outputs: {c.get('train_documents', '?'):,} train + {c.get('validation_documents', '?'):,} validation "
              f"documents kept after dedupe; vocab {t.get('vocab_size', '?')}; "
              f"{g.get('train_tokens', 0):,} train tokens in {g.get('train_examples', 0):,} blocks")
        total = sum(r["wall_s"] for r in results)
        peak = max(max(r["peak_tree_rss_mb"], r["maxrss_mb"]) for r in results)
        print(f"load average now {os.getloadavg()[0]:.2f}")
        per_stage = " ".join(f"{r['stage']}_s={r['wall_s']:.1f} "
                             f"{r['stage']}_rss_mb={max(r['peak_tree_rss_mb'], r['maxrss_mb']):.0f}" for r in results)
        print(f"corpus_mb={mb:.1f} total_s={total:.1f} mb_per_s={mb / total:.2f} {per_stage} peak_rss_mb={peak:.0f}")
    finally:
        if a.keep or a.dir:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
