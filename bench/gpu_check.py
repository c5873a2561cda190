"""The GPU check of issue 15, in one run (started by ``bench/gpu_check.sh``, which installs the carried wheels
and tees everything printed to ``$OUT/gpu_check.log``):

1. environment: Python / torch / transformers versions, the device, bf16 support, a bf16 matmul peak
   measured here (``common.matmul_peak``);
2. the whole pipeline on the default corpus with params.yaml's params, in a temporary copy of the project
   (dvc.yaml, params.yaml, stages/, src/): ``dvc repro`` stage by stage when dvc is importable, else the stage
   scripts in dvc.yaml's order; stage times, held-out perplexity / top-1 / top-5 and the cloze figures;
3. speed: ``bench/speed.py`` (our loop against the Hugging Face Trainer recipe, bf16, same device, same run),
   RoBERTa-base shape at block 128 and 512; tokens/s, the ratio, MFU against the dense bf16 peak and against
   the measured matmul peak;
4. resume: the pretrain stage run uninterrupted, and run again, SIGTERMed after some steps and rerun (it resumes
   from the checkpoint the signal wrote); the two loss curves compared within a stated tolerance.

``--device cpu --tiny``: the same four parts with tiny sizes everywhere (a CPU smoke run of the whole script).
Every figure is printed as ``figure <part>.<name> = <number>`` (and collected in ``$OUT/gpu_check.json``); the
output of every subprocess goes to ``$OUT/gpu_check_subprocess.log`` (its tail is printed when it fails).
The project's own params.yaml, data/ and metrics/ are never touched.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # common (which puts ROOT/src first on sys.path)

import common  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's H200 SXM datasheet: 989 TFLOP/s dense bf16 (1,979 with 2:4 sparsity)

# --tiny: params.yaml with these changes (seconds per stage on a 2-core CPU)
TINY_PARAMS = {
    "fetch_corpus": {"max_documents": 400},
    "train_tokenizer": {"vocab_size": 500},
    "tokenize_group": {"block_size": 32},
    "model": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64},
    "pretrain": {"warmup_steps": 2, "max_steps": 20, "batch_size": 8, "log_every": 5, "eval_every": 10,
                 "checkpoint_every": 10, "eval_blocks": 16},
    "evaluate": {"passes": 1, "max_blocks": 32},
}

USUAL_S = {"speed": 150, "resume": 60}  # GPU estimates (seconds) for --budget-s
FIGURES: dict[str, float] = {}
SUBLOG: Path | None = None


def say(text: str = "") -> None:
    print(text, flush=True)


def figure(name: str, value, unit: str = "") -> None:
    """One labelled figure: ``figure <name> = <number> [unit]``."""
    value = float(value) if isinstance(value, (bool, int)) else value
    FIGURES[name] = value
    say(f"figure {name} = {value:.6g}{' ' + unit if unit else ''}" if isinstance(value, float)
        else f"figure {name} = {value}{' ' + unit if unit else ''}")


def section(title: str) -> float:
    say(f"\n== {title} ==")
    return time.perf_counter()


def sh(cmd: list[str], cwd: Path, env: dict, label: str, check: bool = True) -> tuple[int, str, float]:
    """Run ``cmd``; its output goes to the subprocess log (and its tail to stdout when it fails)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.perf_counter() - t0
    with open(SUBLOG, "a", encoding="utf-8") as fh:
        fh.write(f"\n===== {label}: {' '.join(cmd)} (exit {proc.returncode}, {dt:.1f} s)\n{proc.stdout}")
    if proc.returncode != 0 and check:
        say(proc.stdout[-3000:])
        raise RuntimeError(f"{label}: exit {proc.returncode}")
    return proc.returncode, proc.stdout, dt


def child_env(extra_path: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*extra_path, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------- 1. environment

def part_env(a) -> dict:
    t0 = section("1. environment")
    import torch
    import transformers

    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device (use --device cpu)")
    name = torch.cuda.get_device_name() if cuda else common.cpu_info()
    if cuda:
        bf16 = torch.cuda.is_bf16_supported()
    else:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        bf16 = any(f in flags for f in ("avx512_bf16", "amx_bf16"))
    say(f"python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
        f"transformers {transformers.__version__}; accelerate {_version('accelerate')}; "
        f"datasets {_version('datasets')}; dvc {'importable' if _has('dvc') else 'not installed'}")
    say(f"device: {a.device}: {name}; native bf16: {bf16}")
    n, reps = (1024, 3) if a.tiny else (8192, 10)
    peak = common.matmul_peak(a.device, "bf16", n, reps)
    measured = peak["gflops_best"] / 1e3
    say(f"bf16 matmul {n}^3, best of {reps}: {measured:.2f} TFLOP/s (median {peak['gflops_median'] / 1e3:.2f})"
        + (f"; H200 dense bf16 datasheet peak {H200_BF16_DENSE_TFLOPS:.0f} TFLOP/s" if cuda else ""))
    figure("env.bf16_supported", bool(bf16))
    figure("env.matmul_bf16_tflops", measured, "TFLOP/s")
    figure("env.time_s", time.perf_counter() - t0, "s")
    return {"peak_tflops": measured}


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------------------------------ 2. pipeline

def load_params(path: Path) -> dict:
    from mlmpipe.params import load_yaml  # ruamel.yaml, as the stages and DVC read it

    return load_yaml(path.read_text(encoding="utf-8"))


def dump_params(p: dict, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True), encoding="utf-8")


def merged(p: dict, changes: dict) -> dict:
    out = json.loads(json.dumps(p))
    for name, values in changes.items():
        out[name] = {**out.get(name, {}), **values}
    return out


def make_project(work: Path, tiny: bool) -> Path:
    proj = work / "project"
    proj.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("stages", "src"):
        shutil.copytree(ROOT / d, proj / d, ignore=skip)
    shutil.copy2(ROOT / "dvc.yaml", proj / "dvc.yaml")
    if tiny:
        dump_params(merged(load_params(ROOT / "params.yaml"), TINY_PARAMS), proj / "params.yaml")
    else:
        shutil.copy2(ROOT / "params.yaml", proj / "params.yaml")
    (proj / "data" / "raw").mkdir(parents=True)  # fetch_corpus's input folder (a dvc.yaml dependency)
    return proj


def stage_commands(proj: Path) -> list[tuple[str, list[str]]]:
    """(stage, argv) in dvc.yaml's order, ``${section.key}`` filled from params.yaml, ``python`` -> this one."""
    import shlex

    import yaml

    stages = yaml.safe_load((proj / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = load_params(proj / "params.yaml")

    def value(match):
        node = params
        for k in match.group(1).split("."):
            node = node[k]
        return str(node)

    out = []
    for name, spec in stages.items():
        argv = shlex.split(re.sub(r"\$\{([^}]+)\}", value, spec["cmd"]))
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        out.append((name, argv))
    return out


def part_pipeline(a, work: Path) -> Path | None:
    t0 = section("2. pipeline (the seven stages on the default corpus" +
                 (", tiny params)" if a.tiny else ", params.yaml's params)"))
    proj = make_project(work, a.tiny)
    env = child_env([str(proj / "src")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # dvc's `python`
    runner = a.runner if a.runner != "auto" else ("dvc" if _has("dvc") else "scripts")
    say(f"project copy: {proj}; runner: {runner}" +
        ("" if runner == "dvc" else " (dvc is not importable: the stage scripts in dvc.yaml's order)"))
    if not _has("dvclive"):
        say("without dvclive: pretrain writes metrics/live/metrics.json as a plain JSON summary (a warning in its log)")
    if not _has("vl_convert"):
        say("without vl-convert-python: evaluate does not draw metrics/loss.png and accuracy_by_frequency.png "
            "(a warning in its log)")
    if runner == "dvc":
        sh([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], proj, env, "dvc init")
    for name, argv in stage_commands(proj):
        cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", name] if runner == "dvc" else argv
        _, _, dt = sh(cmd, proj, env, f"stage {name}")
        say(f"stage {name:<17} {dt:7.1f} s")
        figure(f"pipeline.stage_{name}_s", dt, "s")
    m = proj / "metrics"
    ev, fm = json.loads((m / "eval.json").read_text()), json.loads((m / "fill_mask.json").read_text())
    fmd = json.loads((m / "details" / "fill_mask.json").read_text())  # the hit counts beside the shares
    tr = json.loads((m / "details" / "train.json").read_text())
    say(f"pretrain: {tr.get('steps')} steps, {tr.get('mixed_precision')} on {tr.get('device')}, "
        f"{tr.get('tokens_per_s', tr.get('tok_s'))} tokens/s")
    say(f"held-out (metrics/eval.json): perplexity {_get(ev, 'ppl', 'perplexity'):.2f}, "
        f"top-1 {100 * _get(ev, 'top1', 'top1_accuracy'):.1f} %, top-5 {100 * _get(ev, 'top5', 'top5_accuracy'):.1f} %")
    say(f"cloze (metrics/fill_mask.json): top-1 {_get(fm, 'cloze@1', 'cloze_top1'):.3f} "
        f"({fmd['cloze_top1_hits']}/{fmd['prompts_with_answers']}), top-{fmd['top_k']} "
        f"{_get(fm, 'cloze@k', 'cloze_topk'):.3f} ({fmd['cloze_topk_hits']}/{fmd['prompts_with_answers']})")
    figure("pipeline.train_tok_s", tr.get("tokens_per_s", tr.get("tok_s", float("nan"))), "tokens/s")
    figure("pipeline.eval_ppl", _get(ev, "ppl", "perplexity"))
    figure("pipeline.eval_top1", _get(ev, "top1", "top1_accuracy"))
    figure("pipeline.eval_top5", _get(ev, "top5", "top5_accuracy"))
    figure("pipeline.cloze_top1", _get(fm, "cloze@1", "cloze_top1"))
    figure("pipeline.cloze_topk", _get(fm, "cloze@k", "cloze_topk"))
    figure("pipeline.total_s", time.perf_counter() - t0, "s")
    return proj


def _get(d: dict, *keys: str) -> float:
    return float(next(d[k] for k in keys if k in d))


# --------------------------------------------------------------------------------------------- 3. speed

def part_speed(a, work: Path, peak_tflops: float) -> None:
    t0 = section("3. speed: our loop vs the Hugging Face Trainer recipe (bench/speed.py, bf16)")
    env = child_env([])
    if a.tiny:
        shape, blocks, extra = "roberta-4x256", (32,), ["--batch", "8", "--steps", "3", "--warmup", "1",
                                                          "--vocab", "1000", "--peak-n", "256"]
    else:
        shape, blocks, extra = "roberta-base", (128, 512), ["--batch", str(a.batch), "--steps", str(a.steps),
                                                           "--warmup", "5"]
    for block in blocks:
        cmd = [sys.executable, str(HERE / "speed.py"), "--device", a.device, "--shape", shape, "--block", str(block),
               "--repeats", "1", "--data", str(work / f"speed-data-{block}"), *extra]
        _, out, dt = sh(cmd, ROOT, env, f"speed {shape} block {block}")
        last = re.search(r"ours_tok_s=(\S+) hf_bf16_tok_s=(\S+) ratio=(\S+)", out)
        flops = re.search(r"FLOPs/token: hf ([\d.]+) M, ours ([\d.]+) M", out)
        own_peak = re.search(r"using the best: bf16 ([\d.]+)", out)
        if not (last and flops):
            say(out[-3000:])
            raise RuntimeError(f"speed {shape} block {block}: could not read speed.py's figures")
        ours, hf, ratio = (float(x) for x in last.groups())
        f_hf, f_ours = float(flops.group(1)) * 1e6, float(flops.group(2)) * 1e6
        key = f"speed.{shape}.b{block}"
        say(f"{shape} block {block}: ours {ours:,.0f} tokens/s, HF recipe {hf:,.0f} tokens/s, ratio {ratio:.2f} "
            f"(speed.py run {dt:.0f} s; its own matmul peak {own_peak.group(1) if own_peak else '?'} GFLOP/s)")
        for side, tok_s, per_tok in (("ours", ours, f_ours), ("hf", hf, f_hf)):
            achieved = per_tok * tok_s / 1e12
            say(f"  {side:<4} {per_tok / 1e6:7.2f} MFLOP/token -> {achieved:8.3f} TFLOP/s = "
                f"{100 * achieved / H200_BF16_DENSE_TFLOPS:6.2f} % of {H200_BF16_DENSE_TFLOPS:.0f} TFLOP/s (H200 "
                f"dense bf16), {100 * achieved / peak_tflops:6.2f} % of the measured {peak_tflops:.2f} TFLOP/s")
            figure(f"{key}.{side}_tok_s", tok_s, "tokens/s")
            figure(f"{key}.{side}_mfu_dense_pct", 100 * achieved / H200_BF16_DENSE_TFLOPS, "%")
            figure(f"{key}.{side}_mfu_measured_pct", 100 * achieved / peak_tflops, "%")
        figure(f"{key}.ratio", ratio)
        figure(f"{key}.time_s", dt, "s")
    say("ModernBERT-base at block 512: not supported yet (bench/speed.py's shapes and config builder are RoBERTa "
        "only)")
    figure("speed.time_s", time.perf_counter() - t0, "s")


# -------------------------------------------------------------------------------------------- 4. resume

STEP_LINE = re.compile(r"mlmpipe\.training: step (\d+)/(\d+) ")


def part_resume(a, work: Path, proj: Path) -> None:
    t0 = section("4. resume: pretrain interrupted (SIGTERM) and resumed vs uninterrupted")
    total, stop_at = (30, 10) if a.tiny else (300, 100)
    exact = a.device == "cpu"
    tol = 0.0 if exact else 1e-2
    say(f"{total} steps, log every step; SIGTERM once step {stop_at} is logged; mixed_precision "
        f"{'no (fp32): the curves must be identical' if exact else 'auto (bf16 autocast): relative loss difference <= 1e-2 per logged step'}")
    base = load_params(proj / "params.yaml")
    env = child_env([str(proj / "src")])
    env["MLMPIPE_LOG"] = "INFO"
    runs = {}
    for run in ("straight", "resumed"):
        p = merged(base, {"pretrain": {"max_steps": total, "log_every": 1, "eval_every": total,
                                       "checkpoint_every": total, "mixed_precision": "no" if exact else "auto"},
                          "paths": {"model": f"data/model_{run}", "metrics": f"metrics_{run}"}})
        dump_params(p, proj / f"params_{run}.yaml")
        runs[run] = {**env, "MLMPIPE_PARAMS": f"params_{run}.yaml", "MLMPIPE_CHECKPOINTS": str(work / f"ckpt_{run}")}
    cmd = [sys.executable, "stages/pretrain.py"]
    _, _, dt_a = sh(cmd, proj, runs["straight"], "resume: uninterrupted run")
    say(f"uninterrupted run: {dt_a:.1f} s")

    t1 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=proj, env=runs["resumed"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines, signalled = [], None
    for line in proc.stdout:
        lines.append(line)
        m = STEP_LINE.search(line)
        if m and signalled is None and int(m.group(1)) >= stop_at:
            proc.send_signal(signal.SIGTERM)
            signalled = int(m.group(1))
    rc = proc.wait()
    with open(SUBLOG, "a", encoding="utf-8") as fh:
        fh.write(f"\n===== resume: interrupted run (exit {rc})\n{''.join(lines)}")
    stopped = next((int(m.group(1)) for ln in lines if (m := re.search(r"interrupted at step (\d+)", ln))), None)
    if rc == 0 or stopped is None:
        say("".join(lines)[-2000:])
        raise RuntimeError(f"the run was not interrupted (exit {rc}; signalled at step {signalled})")
    say(f"interrupted run: SIGTERM after step {signalled} was logged, stopped with a checkpoint at step {stopped} "
        f"(exit {rc}), {time.perf_counter() - t1:.1f} s")
    _, out, dt_b = sh(cmd, proj, runs["resumed"], "resume: resumed run")
    resumed = re.search(r"resuming from .* \(step (\d+) of (\d+)\)", out)
    if not resumed:
        raise RuntimeError("the rerun did not resume from the checkpoint")
    say(f"resumed run: from step {resumed.group(1)}, {dt_b:.1f} s")

    def curve(run):
        with open(proj / f"metrics_{run}" / "curve_train.csv", encoding="utf-8") as fh:
            return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh)}

    ca, cb = curve("straight"), curve("resumed")
    if sorted(ca) != sorted(cb) or len(ca) != total:
        raise RuntimeError(f"the curves have different steps ({len(ca)} vs {len(cb)} rows)")
    rel = max(abs(ca[s] - cb[s]) / max(abs(ca[s]), 1e-12) for s in ca)
    after = max((abs(ca[s] - cb[s]) / max(abs(ca[s]), 1e-12) for s in ca if s > stopped), default=0.0)
    weights = weight_diff(proj / "data/model_straight", proj / "data/model_resumed")
    ok = rel <= tol
    say(f"loss curves ({total} steps): max relative difference {rel:.3g} (after the resume point: {after:.3g}); "
        f"tolerance {tol:g}: {'OK' if ok else 'FAILED'}; final weights max |difference| {weights:.3g}")
    figure("resume.interrupted_at_step", stopped)
    figure("resume.max_rel_loss_diff", rel)
    figure("resume.tolerance", tol)
    figure("resume.max_abs_weight_diff", weights)
    figure("resume.ok", ok)
    figure("resume.time_s", time.perf_counter() - t0, "s")
    if not ok:
        raise RuntimeError("resume check failed: the resumed curve is outside the tolerance")


def weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    global SUBLOG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and few steps everywhere (a CPU smoke run)")
    ap.add_argument("--runner", choices=("auto", "dvc", "scripts"), default="auto",
                    help="pipeline: dvc repro (auto: when dvc is importable) or the stage scripts in dvc.yaml's order")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    ap.add_argument("--steps", type=int, default=30, help="speed: timed steps per run (GPU)")
    ap.add_argument("--batch", type=int, default=32, help="speed: batch size (GPU)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: env,pipeline,speed,resume")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="a part is skipped (one line) when it would start after budget minus its usual time "
                         "(GPU: speed 150 s, resume 60 s), so the run ends inside the device tool's limit")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    SUBLOG = a.out / "gpu_check_subprocess.log"
    SUBLOG.write_text("")
    skip = set(filter(None, a.skip.split(",")))
    t_all = time.perf_counter()
    say(f"# gpu_check {time.strftime('%Y-%m-%d %H:%M:%S')}: device {a.device}{', tiny' if a.tiny else ''}; "
        f"output in {a.out}")
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as t:
        work = Path(t)
        peak = part_env(a)["peak_tflops"]
        proj = None
        for name, fn in (("pipeline", lambda: part_pipeline(a, work)),
                         ("speed", lambda: part_speed(a, work, peak)),
                         ("resume", lambda: part_resume(a, work, proj))):
            if name in skip or (name == "resume" and proj is None):
                say(f"\n== {name}: skipped ({'--skip' if name in skip else 'the pipeline did not run'}) ==")
                continue
            used = time.perf_counter() - t_all
            if not a.tiny and used + USUAL_S.get(name, 0) > a.budget_s:
                say(f"\n== {name}: skipped (out of time: {used:.0f} s used, it usually takes {USUAL_S[name]} s, "
                    f"--budget-s {a.budget_s:.0f}) ==")
                failed.append(name)
                continue
            try:
                result = fn()
                if name == "pipeline":
                    proj = result
            except Exception as e:  # one part failing does not hide the others' figures
                say(f"FAILED {name}: {e}")
                failed.append(name)
    figure("total_s", time.perf_counter() - t_all, "s")
    (a.out / "gpu_check.json").write_text(json.dumps(FIGURES, indent=1) + "\n")
    say(f"gpu_check: {'all parts OK' if not failed else 'FAILED: ' + ', '.join(failed)}; "
        f"{time.perf_counter() - t_all:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
