"""bench/gpu_check.sh (issue 15) end to end on the CPU with tiny sizes, as the GPU machine would run it: dvc,
dvclive and vl-convert-python made unimportable (the GPU machine has none of them), so the pipeline runs as the
stage scripts in dvc.yaml's order, pretrain writes its live summary without DVCLive and evaluate draws no PNG.
Checks the exit code and that every part printed its labelled figures; no timed assertion.

And the fallback the GPU machine needs in the library: without dvclive, LiveMetrics writes the same summary
file (same keys and values) as DVCLive does."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"^figure (\S+) = (\S+)", re.M)
UNIMPORTABLE = ("dvc", "dvclive", "vl_convert")


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for module in UNIMPORTABLE:
        (shadow / f"{module}.py").write_text('raise ImportError("not installed on the GPU machine")\n')
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": str(shadow)}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--device", "cpu", "--tiny"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-5000:]
    log = (out / "gpu_check.log").read_text()
    assert "gpu_check: all parts OK" in log
    figures = {k: float(v) for k, v in FIGURE.findall(log)}  # every figure's value parses as a number
    assert figures == pytest.approx(json.loads((out / "gpu_check.json").read_text()), rel=1e-5, nan_ok=True)
    stages = ["check_params", "fetch_corpus", "train_tokenizer", "tokenize_group", "build_model", "pretrain",
              "evaluate", "fill_mask_report"]
    need = (["env.bf16_supported", "env.matmul_bf16_tflops", "env.time_s"]
            + [f"pipeline.stage_{s}_s" for s in stages]
            + ["pipeline.eval_ppl", "pipeline.eval_top1", "pipeline.eval_top5", "pipeline.cloze_top1",
               "pipeline.cloze_topk", "pipeline.total_s"]
            + [f"speed.roberta-4x256.b{b}.{k}" for b in (32,)
               for k in ("ours_tok_s", "hf_tok_s", "ratio", "ours_mfu_dense_pct", "ours_mfu_measured_pct",
                         "hf_mfu_dense_pct", "hf_mfu_measured_pct")]
            + ["resume.interrupted_at_step", "resume.max_rel_loss_diff", "resume.tolerance",
               "resume.max_abs_weight_diff", "resume.ok", "total_s"])
    assert not [k for k in need if k not in figures], log[-3000:]
    assert all(math.isfinite(figures[k]) for k in need)
    assert figures["pipeline.eval_ppl"] > 1 and 0 <= figures["pipeline.eval_top1"] <= 1
    assert figures["resume.ok"] == 1 and figures["resume.max_rel_loss_diff"] == 0  # fp32 on CPU: exact
    assert "runner: scripts" in log and "ModernBERT-base at block 512: not supported yet" in log
    sub = (out / "gpu_check_subprocess.log").read_text()
    assert "dvclive is not installed" in sub and "vl-convert-python is not installed" in sub


def test_live_metrics_without_dvclive_writes_dvclives_summary(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "src"))
    from mlmpipe import live

    history = SimpleNamespace(train=[{"step": 5, "loss": 6.5, "lr": 0.001}],
                              val=[{"step": 5, "val_loss": 6.7, "val_top1": 0.02}])

    def run(metrics_dir):
        m = live.LiveMetrics(str(metrics_dir))
        m.train_row(history.train[0], 123.4, history)
        running = json.loads((metrics_dir / "live" / "metrics.json").read_text())
        m.val_row(history.val[0], history)
        m.end(history)
        return running, json.loads((metrics_dir / "live" / "metrics.json").read_text())

    with_dvclive = run(tmp_path / "a")
    monkeypatch.setitem(sys.modules, "dvclive", None)  # `from dvclive import Live` raises ImportError
    without = run(tmp_path / "b")
    assert without == with_dvclive
    assert (tmp_path / "b" / "curve_train.csv").read_text() == (tmp_path / "a" / "curve_train.csv").read_text()
