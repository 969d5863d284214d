"""Relaxed-boundary metrics: the published MATLAB behaviour (bugs included) on hand-worked
examples, and the corrected variant."""
import numpy as np
import pytest

from surgflow.evaluation import relaxed as rx

FPS = 0.3  # 10 s window at 0.3 fps = 3 frames, small enough to work by hand


def test_window_frames():
    assert rx.window_frames(1) == 10 and rx.window_frames(25) == 250 and rx.window_frames(FPS) == 3


# Early-transition bug, worked by hand (0-based phases; the script's ids are these + 1).
#   frame  0 1 2 3 4 5 | 6 7 8 9 10 11
#   gt     0 0 0 0 0 0 | 1 1 1 1 1  1
#   pred   0 1 0 0 1 1 | 1 1 1 1 1  1      frames 4, 5: next phase predicted early (diff +1);
#   diff   0 1 0 0 1 1 | 0 0 0 0 0  0      frame 1: a spurious jump at the segment's START.
# Segment of phase 0: length 6, t = min(3, 6) = 3. Intended early window = last 3 frames (3, 4, 5):
# their mask (diff == +1) is [F, T, T]. The script applies that length-3 mask to the whole segment
# (padded with false), i.e. to frames 0, 1, 2: frame 1 is zeroed, frames 4, 5 stay wrong.
#   published relaxed diff: 0 0 0 0 1 1 | 0 ...     corrected: 0 1 0 0 0 0 | 0 ...
# Published per phase (percent), TP = frames of (pred == p or gt == p) with relaxed diff 0:
#   phase 0: union = frames 0-5 (6); TP = {0,1,2,3} = 4 -> J = 66.67;
#            P = 4 / #(pred == 0 = {0,2,3}) = 133.3 -> clipped to 100;  R = 4 / 6 = 66.67
#   phase 1: union = {1, 4..11} (9); TP = {1, 6..11} = 7 -> J = 77.78;
#            P = 7 / #(pred == 1) 9 = 77.78;  R = 7 / 6 = 116.7 -> clipped to 100
#   accuracy = #(diff == 0) 10 / 12 = 83.33
# Aggregation (one video, 2 phases): jaccard mean (66.67 + 77.78) / 2 = 72.22, +- across phases
# |77.78 - 66.67| / sqrt(2) = 7.857; precision (100 + 77.78) / 2 = 88.89 +- 15.71;
# recall (66.67 + 100) / 2 = 83.33 +- 23.57; accuracy 83.33 (+- across 1 video: undefined).
GT = np.array([0] * 6 + [1] * 6)
PRED = np.array([0, 1, 0, 0, 1, 1] + [1] * 6)


def test_early_transition_bug_relaxed_diff():
    assert rx.relaxed_diff(GT, PRED, FPS, "published").tolist() == [0, 0, 0, 0, 1, 1] + [0] * 6
    assert rx.relaxed_diff(GT, PRED, FPS, "corrected").tolist() == [0, 1, 0, 0, 0, 0] + [0] * 6


def test_early_transition_bug_published_numbers():
    v = rx.published_video(GT, PRED, FPS, 2)
    np.testing.assert_allclose(v["jaccard"], [400 / 6, 700 / 9])
    np.testing.assert_allclose(v["precision"], [400 / 3, 700 / 9])  # unclipped: 133.3
    np.testing.assert_allclose(v["recall"], [400 / 6, 700 / 6])  # unclipped: 116.7
    assert v["accuracy"] == pytest.approx(1000 / 12)
    r = rx.published({"v": GT}, {"v": PRED}, FPS, 2)
    assert r["jaccard"]["mean"] == pytest.approx(72.2222, abs=1e-3)
    assert r["jaccard"]["std"] == pytest.approx(7.8567, abs=1e-3)
    assert r["precision"]["mean"] == pytest.approx(88.8889, abs=1e-3)
    assert r["precision"]["std"] == pytest.approx(15.7135, abs=1e-3)
    assert r["recall"]["mean"] == pytest.approx(83.3333, abs=1e-3)
    assert r["recall"]["std"] == pytest.approx(23.5702, abs=1e-3)
    assert r["accuracy"]["mean"] == pytest.approx(83.3333, abs=1e-3)
    assert np.isnan(r["accuracy"]["std"])


def test_early_transition_corrected_numbers():
    # corrected relaxed prediction: 0 1 0 0 0 0 | 1 ... -> only frame 1 is wrong
    assert rx.relaxed_prediction(GT, PRED, FPS).tolist() == [0, 1, 0, 0, 0, 0] + [1] * 6
    r = rx.corrected({"v": GT}, {"v": PRED}, FPS, 2)
    s = r["videowise"]["summary"]
    assert s["accuracy"]["mean"] == pytest.approx(11 / 12)
    # phase 0: TP 5 FP 0 FN 1 -> J 5/6; phase 1: TP 6 FP 1 FN 0 -> J 6/7
    assert s["jaccard"]["mean"] == pytest.approx((5 / 6 + 6 / 7) / 2)
    assert s["precision"]["mean"] == pytest.approx((1 + 6 / 7) / 2)
    assert s["recall"]["mean"] == pytest.approx((5 / 6 + 1) / 2)


def test_never_predicted_phase_gets_recall_and_infinite_precision_in_published():
    # gt 0 0 0 0 1 1 1 1 1 1, pred all 0: phase 1 is never predicted.
    # Late transition zeroes diff -1 in the first t = 3 frames of phase 1 (frames 4, 5, 6).
    # phase 0: union all 10, TP 7 -> J 70, P 7/10 = 70, R 7/4 = 175 -> 100
    # phase 1: union 6, TP 3 -> J 50, P 3/0 = inf -> 100, R 3/6 = 50
    gt = np.array([0] * 4 + [1] * 6)
    pred = np.zeros(10, int)
    v = rx.published_video(gt, pred, FPS, 2)
    assert np.isinf(v["precision"][1])
    r = rx.published({"v": gt}, {"v": pred}, FPS, 2)
    np.testing.assert_allclose(r["precision"]["per_phase_mean"], [70, 100])
    np.testing.assert_allclose(r["recall"]["per_phase_mean"], [100, 50])
    np.testing.assert_allclose(r["jaccard"]["per_phase_mean"], [70, 50])


def test_pair_rules_and_absent_phase():
    # 0-based phase 5 (script id 6) forgives a late diff of -2; phase 2 (id 3) does not.
    gt = np.array([0, 0, 0, 3, 3, 3, 5, 5, 5, 5])
    pred = np.array([0, 0, 0, 3, 3, 3, 3, 5, 5, 5])  # frame 6: diff -2 at the start of phase 5
    assert rx.relaxed_diff(gt, pred, FPS, "published")[6] == 0
    gt2 = np.array([0, 0, 0, 2, 2, 2])
    pred2 = np.array([0, 0, 0, 0, 2, 2])  # diff -2 at the start of phase 2 (id 3)
    assert rx.relaxed_diff(gt2, pred2, FPS, "corrected")[3] == -2
    # phase absent from every video's GT: NaN, and MATLAB's plain mean over phases becomes NaN
    r = rx.published({"v": gt2}, {"v": pred2}, FPS, 7)
    assert np.isnan(r["jaccard"]["per_phase_mean"][1])
    assert np.isnan(r["jaccard"]["mean"]) and np.isfinite(r["precision"]["mean"])


def test_very_short_segment_window_shrinks():
    # phase 1 lasts one frame (t = min(3, 1) = 1): the late prediction of phase 0 there is forgiven
    gt = np.array([0, 0, 0, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 0, 2, 2, 2])
    for variant in rx.VARIANTS:
        assert rx.relaxed_diff(gt, pred, FPS, variant).tolist() == [0] * 7
    # an early +1 one frame before a one-frame segment's end is the same frame in both variants
    pred = np.array([0, 0, 0, 2, 2, 2, 2])
    for variant in rx.VARIANTS:
        assert rx.relaxed_diff(gt, pred, FPS, variant)[3] == 0
