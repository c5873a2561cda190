"""The PNG charts evaluate draws beside the fill-mask report: the right fields and marks, drawn, deterministic."""
import json

import pytest

from mlmpipe import charts
from mlmpipe.outputs import read_json, write_report

from test_plots_offline import _png_rgb

TRAIN = [{"step": float(s), "loss": 7.0 - s / 100, "lr": 1e-3} for s in range(100, 700, 100)]
VAL = [{"step": 300.0, "val_loss": 4.1, "val_top1": 0.3}, {"step": 600.0, "val_loss": 3.9, "val_top1": 0.35}]
BUCKETS = [{"bucket": "rank 1-100", "tokens": 10.0, "top1": 0.62, "top5": 0.81},
           {"bucket": "rank >100", "tokens": 5.0, "top1": 0.21, "top5": 0.37}]


def test_read_csv_gives_numbers_and_keeps_labels(tmp_path):
    path = tmp_path / "eval_by_frequency.csv"
    path.write_text("bucket,tokens,top1,top5\nrank 1-100,1009,0.6283,0.8127\n", encoding="utf-8")
    assert charts.read_csv(path) == [{"bucket": "rank 1-100", "tokens": 1009.0, "top1": 0.6283, "top5": 0.8127}]


def test_loss_spec_draws_both_curves_against_the_step():
    spec = charts.loss_spec(TRAIN, VAL)
    assert spec["encoding"]["x"]["field"] == "step" and spec["encoding"]["x"]["type"] == "quantitative"
    curves = [v["curve"] for v in spec["data"]["values"]]
    assert curves.count("train") == len(TRAIN) and curves.count("held-out") == len(VAL)
    assert [v["step"] for v in spec["data"]["values"] if v["curve"] == "held-out"] == [300.0, 600.0]


def test_frequency_spec_has_bars_on_a_percent_axis_in_file_order():
    spec = charts.frequency_spec(BUCKETS)
    bars = spec["layer"][0]
    assert bars["mark"] == "bar" and bars["encoding"]["x"]["scale"]["domain"] == [0, 1]
    assert spec["encoding"]["y"]["sort"] == ["rank 1-100", "rank >100"]
    assert len(spec["data"]["values"]) == 2 * len(BUCKETS)  # top-1 and top-5 per bucket


@pytest.mark.parametrize("spec", [charts.loss_spec(TRAIN, VAL), charts.frequency_spec(BUCKETS)],
                         ids=["loss", "frequency"])
def test_png_is_drawn_and_deterministic(tmp_path, spec):
    first, second = charts.png(spec), charts.png(json.loads(json.dumps(spec)))
    assert first == second  # the same bytes for the same figures: a committed PNG changes only with them
    path = tmp_path / "chart.png"
    path.write_bytes(first)
    width, height, rows = _png_rgb(path)
    coloured = sum(1 for row in rows for r, g, b in row if max(r, g, b) - min(r, g, b) > 60)
    assert width > 500 and height > 200 and coloured > 500, (width, height, coloured)  # marks, not a blank page


def test_write_report_splits_figures_from_the_record(tmp_path):
    record = {"perplexity": 27.387123456, "top1_accuracy": 0.46841234, "examples": 12, "source": "builtin:x"}
    write_report(tmp_path, "eval", record, {"ppl": "perplexity", "top1": "top1_accuracy"})
    assert read_json(tmp_path / "details" / "eval.json") == record
    assert read_json(tmp_path / "eval.json") == {"ppl": 27.3871, "top1": 0.4684}
    with pytest.raises(KeyError, match="no cloze_top1"):
        write_report(tmp_path, "fill_mask", record, {"cloze@1": "cloze_top1"})
