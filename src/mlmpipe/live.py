"""The run as it goes, for `dvc exp show`, `dvc plots show` and the VS Code DVC extension while pretrain runs.

At every row of the training curve (every ``log_every`` steps) and of the validation curve (every ``eval_every``
steps), on the main process only:
- DVCLive's summary, ``<metrics>/live/metrics.json``: the step, the last training loss, learning rate and
  tokens/s, the last validation loss and top-1 (a DVC metric of pretrain, so `dvc exp show` shows a running
  experiment's progress, queued or not);
- the curves ``<metrics>/curve_train.csv`` and ``curve_val.csv``, rewritten whole (atomically) from the run's
  history, which a resumed run restores from its checkpoint: the plots dvc.yaml declares draw the run so far.

When the run ends the summary is written once more without tokens/s: the tracked files then hold no timing and
no timestamp, so identical runs leave identical bytes (timings live in metrics/details/train.json).
"""
from __future__ import annotations

import logging
from pathlib import Path

from .outputs import write_text

log = logging.getLogger(__name__)
LIVE_DIR, CURVE_TRAIN, CURVE_VAL = "live", "curve_train.csv", "curve_val.csv"


def csv_text(rows: list[dict]) -> str:
    keys = list(rows[0]) if rows else ["step"]
    return "\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n"


class LiveMetrics:
    """DVCLive's summary and the curve files of one run, kept current while it trains."""

    def __init__(self, metrics_dir: str):
        self.dir = Path(metrics_dir)
        self.live = _summary_live()(dir=str(self.dir / LIVE_DIR), resume=False, report=None, save_dvc_exp=False,
                                    dvcyaml=None, monitor_system=False)

    def train_row(self, row: dict, tokens_per_s: float, history) -> None:
        self.live.step = row["step"]
        for name, value in (("loss", row["loss"]), ("lr", row["lr"]), ("tok_s", round(tokens_per_s, 1))):
            self.live.log_metric(name, value, plot=False)
        self._flush(history)

    def val_row(self, row: dict, history) -> None:
        self.live.step = row["step"]
        self.live.log_metric("val_loss", row["val_loss"], plot=False)
        self.live.log_metric("val_top1", row["val_top1"], plot=False)
        self._flush(history)

    def end(self, history) -> None:
        """The finished run's files: the whole curves, and a summary of their last rows without timings (built
        from the history, so a resumed run writes the same bytes as an uninterrupted one)."""
        last_train, last_val = (history.train or [{}])[-1], (history.val or [{}])[-1]
        self.live.summary = {k: v for k, v in (("loss", last_train.get("loss")), ("lr", last_train.get("lr")),
                                               ("val_loss", last_val.get("val_loss")),
                                               ("val_top1", last_val.get("val_top1"))) if v is not None}
        self.live.step = max(last_train.get("step", 0), last_val.get("step", 0))
        self._flush(history)

    def _flush(self, history) -> None:
        self.live.make_summary()
        write_text(self.dir / CURVE_TRAIN, csv_text(history.train))
        write_text(self.dir / CURVE_VAL, csv_text(history.val))


def _summary_live():
    """DVCLive's ``Live`` without its own DVC set-up. The pipeline is DVC's already (these files are a stage's
    outputs, and no experiment is saved from inside the stage), and that set-up fails in a git repository with no
    commit yet (dvclive 3.49 asks scmrepo for HEAD before it checks, and scmrepo raises "Empty git repo"), which
    is where a new project runs its first `dvc repro`."""
    try:
        from dvclive import Live  # imported where a run is watched: the library stays light without it
    except ImportError:  # a machine without DVC (dvclive needs it), e.g. bench/gpu_check.sh's GPU machine
        log.warning("dvclive is not installed: %s is written as a plain JSON summary (same keys), without DVCLive",
                    "live/metrics.json")
        return PlainLive

    class SummaryLive(Live):
        def _init_dvc(self):  # (dvclive's private hook; dvclive is pinned in constraints.txt)
            pass

    return SummaryLive


class PlainLive:
    """What LiveMetrics uses of DVCLive's ``Live`` when dvclive is not installed: ``summary`` (the last value of
    each metric), ``step``, ``log_metric`` and ``make_summary``, which writes ``<dir>/metrics.json`` as DVCLive
    does (the summary with ``step`` added, indent 4)."""

    def __init__(self, dir: str, **_ignored):
        self.dir, self.summary, self.step = Path(dir), {}, None

    def log_metric(self, name: str, val, plot: bool = True) -> None:
        self.summary[name] = val

    def make_summary(self) -> None:
        import json

        summary = {**self.summary, **({"step": self.step} if self.step is not None else {})}
        self.summary = summary
        write_text(self.dir / "metrics.json", json.dumps(summary, indent=4) + "\n")
