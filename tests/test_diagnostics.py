"""evaluation/diagnostics.py on golden arrays: per-phase P/R/F1, confusion, "never predicted"
warnings, and the training log's note when validation is past its best and still falling."""
from __future__ import annotations

import math

import numpy as np
import pytest

from surgflow.evaluation.diagnostics import format_diagnostics, phase_diagnostics, validation_trend

NAMES = ["Prep", "Dissect", "Clip"]


def _golden():
    gt = {"v1": np.array([0, 0, 1, 1, 1, 2, 2, -1]),
          "v2": np.array([0, 1, 1, 2, 2, 2]),
          "v3": np.array([0, 0, 1, 1])}  # no Clip in its ground truth
    pred = {"v1": np.array([0, 1, 1, 1, 1, 1, 1, 2]),  # Clip never predicted on v1
            "v2": np.array([0, 1, 1, 2, 1, 1]),  # 1 of 3 Clip frames
            "v3": np.array([0, 0, 1, 2])}
    return gt, pred


def test_golden_per_phase_confusion_and_warnings():
    d = phase_diagnostics(*_golden(), NAMES)
    # rows ground truth, columns prediction; v1's unlabelled last frame is skipped
    assert d["confusion"] == [[4, 1, 0], [0, 6, 1], [0, 4, 1]]
    pp = d["per_phase"]
    assert pp["Prep"]["frames"] == 5 and pp["Prep"]["predicted"] == 4
    assert pp["Prep"]["precision"] == 100.0 and pp["Prep"]["recall"] == 80.0
    assert math.isclose(pp["Dissect"]["precision"], 600 / 11) and math.isclose(pp["Dissect"]["recall"], 600 / 7)
    assert math.isclose(pp["Clip"]["precision"], 50.0) and math.isclose(pp["Clip"]["recall"], 20.0)
    assert math.isclose(pp["Clip"]["f1"], 2 * 50 * 20 / 70)
    # Clip occurs in v1 and v2 (not v3); recall 0 only on v1
    assert d["zero_recall"] == {"Clip": {"videos": ["v1"], "of": 2}}
    assert d["warnings"] == ["Clip: recall 0 on 1 of 2 test videos (v1)"]


def test_warning_wording_when_never_predicted_anywhere():
    gt = {f"video{i}": np.array([0, 1, 2, 2]) for i in range(5)}
    pred = {v: np.array([0, 1, 1, 1]) for v in gt}
    d = phase_diagnostics(gt, pred, ["Preparation", "CalotTriangleDissection", "ClippingCutting"])
    assert d["warnings"] == ["ClippingCutting: recall 0 on 5 of 5 test videos"]
    assert d["per_phase"]["ClippingCutting"]["f1"] == 0.0
    text = format_diagnostics(d, label="test")
    assert "[test] WARNING ClippingCutting: recall 0 on 5 of 5 test videos" in text
    assert all(line.startswith("[test] ") for line in text.splitlines())
    assert "  2 ClippingCutting" in text  # a row of the table: index, name, numbers, confusion


def test_a_phase_absent_everywhere_is_undefined_not_zero():
    d = phase_diagnostics({"a": np.array([0, 0])}, {"a": np.array([0, 0])}, ["x", "y"])
    assert math.isnan(d["per_phase"]["y"]["precision"]) and math.isnan(d["per_phase"]["y"]["f1"])
    assert d["warnings"] == [] and "n/a" in format_diagnostics(d)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="no prediction"):
        phase_diagnostics({"a": np.zeros(2, int)}, {}, NAMES)
    with pytest.raises(ValueError, match="2 ground-truth frames but 3"):
        phase_diagnostics({"a": np.zeros(2, int)}, {"a": np.zeros(3, int)}, NAMES)


def test_validation_trend_past_best_and_still_falling():
    acc = [60.0, 70.0, 75.0, 78.3, 77.0, 74.0, 72.0, 70.1]
    note = validation_trend(acc, epochs=[6, 7, 8, 10, 11, 12, 13, 14])
    assert note == "val/accuracy 70.1, 8.2 below best 78.3 at epoch 10, falling for 4 epochs"
    assert validation_trend([60, 70, 75]) is None  # improving
    assert validation_trend([70, 78, 74, 75]) is None  # below best but rose last: not "still falling"
    assert validation_trend([70, 78, 74]) is None  # one fall: noise
    assert validation_trend([70, 78, float("nan"), 76, 74]) == \
        "val/accuracy 74, 4 below best 78 at epoch 2, falling for 3 epochs"  # epoch 3 not validated
    # lower is better (an error): rising means worse
    assert validation_trend([1.0, 0.8, 0.9, 1.1], metric="val/wMAE", higher_is_better=False) == \
        "val/wMAE 1.1, 0.3 above best 0.8 at epoch 2, falling for 2 epochs"


def test_metrics_log_warns_when_validation_falls(tmp_path, capsys):
    from surgflow.training.metrics_log import MetricsLogger

    m = MetricsLogger(tmp_path, is_main=True)
    m.open()
    for e, acc in enumerate([0.70, 0.78, 0.76, 0.73], 1):
        m.write_row({"epoch": float(e), "step": e * 10, "val/accuracy": acc}, e * 10)
    m.close()
    log = (tmp_path / "log.txt").read_text()
    assert log.count("validation past its best and still falling") == 1
    assert "val/accuracy 0.73, 0.05 below best 0.78 at epoch 2, falling for 2 epochs" in log


def test_eval_prints_and_writes_the_diagnostics(tmp_path, monkeypatch, capsys):
    import json

    import surgflow.data.store as store
    import surgflow.runs as runs
    from surgflow.evaluation import runner
    from test_eval_runner import META, FakeDataset, _trained_bn_model

    class Cfg:
        class train:
            seq_len = 4

    ds = FakeDataset()
    monkeypatch.setattr(runs, "load_model", lambda run, which="best", device="cpu", **kw:
                        (_trained_bn_model().eval(), Cfg, dict(META)))
    monkeypatch.setattr(store, "PreparedDataset", lambda root, split="all", subset=None, **_kw: ds)
    res = runner.evaluate_run(tmp_path, split="test", plots=False)
    out = capsys.readouterr().out
    d = res["diagnostics"]
    assert d["confusion"] == res["scores"]["phase"]["confusion"]  # the scorer's pooled matrix
    assert d["warnings"], "the tiny model predicts few phases: some are never predicted"
    for w in d["warnings"]:
        assert f"[test] WARNING {w}" in out and " test videos" in w
    assert "[test] phase diagnostics" in out and "prec %" in out
    saved = json.loads((tmp_path / "eval_test" / "scores.json").read_text())
    assert saved["phase_diagnostics"]["warnings"] == d["warnings"]
    assert "WARNING" in (tmp_path / "eval_test" / "diagnostics.txt").read_text()


def test_demo_report_per_phase_section():
    from surgflow.experiments.demo import ROWS
    from surgflow.experiments.demo_report import phase_section

    names = ["Preparation", "CalotTriangleDissection", "ClippingCutting"]
    ev = {"preds": {"video05": {"gt_phase": np.array([0, 1, 2, 2]), "phase": np.array([0, 1, 1, 1])}}}
    results = [{"seed": s, "evals": {r: ev for r in ROWS}} for s in (0, 1)]
    L: list[str] = []
    diags = phase_section(L, results, names, 2)
    text = "\n".join(L)
    assert set(diags) == set(ROWS) and "## Per phase" in text
    assert "ClippingCutting: recall 0 on 2 of 2 (test video, seed) pairs" in text
    assert "| ClippingCutting | 0.0 | 0.0 | 0.0 |" in text.replace("  ", " ")
