"""The run's two charts as PNG files, for a pull request or any Markdown viewer: the loss by step (train, and
held-out) and held-out accuracy by how frequent the masked token is in training (evaluate draws them beside
metrics/fill_mask.md, which links them by these names).

Vega-Lite specs rendered by vl-convert (no browser, no network, the same output bytes for the same input);
`dvc plots show` draws the same CSV files in a browser, interactively and across revisions.
"""
from __future__ import annotations

import csv
import os
from typing import Any

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
LOSS_PNG, FREQUENCY_PNG = "loss.png", "accuracy_by_frequency.png"


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics CSV, numbers as floats."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def loss_spec(train: list[dict], val: list[dict]) -> dict:
    """Train loss (every log_every steps) and held-out loss (every eval_every steps) against the step."""
    values = ([{"step": r["step"], "loss": r["loss"], "curve": "train"} for r in train]
              + [{"step": r["step"], "loss": r["val_loss"], "curve": "held-out"} for r in val])
    return {
        "$schema": SCHEMA, "title": "Masked-LM loss by step", "width": 520, "height": 260,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "optimizer step"},
            "y": {"field": "loss", "type": "quantitative", "title": "loss (nats per masked token)"},
            "color": {"field": "curve", "type": "nominal", "title": None, "sort": ["train", "held-out"]},
        },
    }


def frequency_spec(buckets: list[dict]) -> dict:
    """Top-1 and top-5 accuracy per frequency bucket as grouped horizontal bars on a 0-100 % axis, labelled."""
    values = [{"bucket": r["bucket"], "k": k, "accuracy": r[field]}
              for r in buckets for k, field in (("top-1", "top1"), ("top-5", "top5"))]
    order = [r["bucket"] for r in buckets]  # the file's order: most frequent tokens first
    x = {"field": "accuracy", "type": "quantitative", "title": "accuracy (% of masked tokens)",
         "scale": {"domain": [0, 1]}, "axis": {"format": ".0%"}}
    y = {"field": "bucket", "type": "nominal", "title": "frequency rank (training split)", "sort": order}
    return {
        "$schema": SCHEMA, "title": "Held-out accuracy by token frequency", "width": 520,
        "data": {"values": values},
        "encoding": {"y": y, "yOffset": {"field": "k", "sort": ["top-1", "top-5"]}},
        "layer": [
            {"mark": "bar", "encoding": {"x": x, "color": {"field": "k", "type": "nominal", "title": None}}},
            {"mark": {"type": "text", "align": "left", "dx": 3},
             "encoding": {"x": x, "text": {"field": "accuracy", "type": "quantitative", "format": ".1%"}}},
        ],
    }


def png(spec: dict, scale: float = 1.5) -> bytes:
    import vl_convert  # ships Vega and fonts; imported only where charts are drawn

    return vl_convert.vegalite_to_png(spec, scale=scale)
