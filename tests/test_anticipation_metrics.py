"""Anticipation errors on hand-worked frames, pooling by frames vs videos."""
import numpy as np
import pytest

from surgflow.evaluation import anticipation_metrics as am

H = 3.0


def test_golden_selection_per_metric():
    # y:     0 (present, excluded), 0.2 (e, in), 1.5 (m, in), 2.9 (d, in), 3 (out), 3 (out)
    y = np.array([0.0, 0.2, 1.5, 2.9, 3.0, 3.0])
    yh = np.array([2.0, 0.4, 1.0, 3.0, 3.0, 2.0])
    r = am.anticipation_errors(y, yh, H)
    assert r["inMAE"] == pytest.approx((0.2 + 0.5 + 0.1) / 3)
    assert r["outMAE"] == pytest.approx((0 + 1.0) / 2)
    assert r["wMAE"] == pytest.approx((r["inMAE"] + r["outMAE"]) / 2)
    assert r["eMAE"] == pytest.approx(0.2)
    assert r["mMAE"] == pytest.approx(0.5)
    assert r["dMAE"] == pytest.approx(0.1)
    # pMAE: predictions in (0.3, 2.7) on frames with y > 0 -> 0.4, 1.0, 2.0 (the y = 0 frame excluded)
    assert r["pMAE"] == pytest.approx((0.2 + 0.5 + 1.0) / 3)


def test_empty_selection_is_nan_and_mean_is_nanmean():
    y = np.full((4, 2), 3.0)
    y[:, 1] = [0.5, 1.0, 3.0, 3.0]
    yh = np.zeros((4, 2))
    r = am.anticipation_scores({"v": y}, {"v": yh}, ["a", "b"], H)
    assert np.isnan(r["instruments"]["a"]["inMAE"]) and np.isnan(r["instruments"]["a"]["wMAE"])
    assert r["mean"]["inMAE"] == pytest.approx(0.75)
    assert r["mean"]["outMAE"] == pytest.approx(3.0)


def test_frames_vs_videos_pooling_differ():
    gts = {"a": np.array([[1.0]] * 9), "b": np.array([[1.0]])}
    preds = {"a": np.array([[1.0]] * 9), "b": np.array([[2.0]])}
    f = am.anticipation_scores(gts, preds, ["x"], H, "frames")
    v = am.anticipation_scores(gts, preds, ["x"], H, "videos")
    assert f["instruments"]["x"]["inMAE"] == pytest.approx(0.1)
    assert v["instruments"]["x"]["inMAE"] == pytest.approx(0.5)
