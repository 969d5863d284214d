"""Edit score and F1@k: golden sequences and a loop-by-loop reference of the MS-TCN algorithm."""
import numpy as np
import pytest

from surgflow.evaluation import segment_metrics as sm


def _ref_segments(x):
    lab, st, en = [x[0]], [0], []
    for i in range(1, len(x)):
        if x[i] != x[i - 1]:
            lab.append(x[i]); st.append(i); en.append(i)
    en.append(len(x))
    return lab, st, en


def _ref_f1(gt, pred, overlap):
    # the MS-TCN f_score loop, written out
    pl, ps, pe = _ref_segments(list(pred))
    yl, ys, ye = _ref_segments(list(gt))
    tp = fp = 0
    hits = [0] * len(yl)
    for j in range(len(pl)):
        iou = []
        for x in range(len(yl)):
            inter = min(pe[j], ye[x]) - max(ps[j], ys[x])
            union = max(pe[j], ye[x]) - min(ps[j], ys[x])
            iou.append(inter / union * (pl[j] == yl[x]))
        idx = int(np.argmax(iou))
        if iou[idx] >= overlap and not hits[idx]:
            tp += 1; hits[idx] = 1
        else:
            fp += 1
    return tp, fp, len(yl) - sum(hits)


def _ref_lev(a, b):
    d = np.zeros((len(a) + 1, len(b) + 1), int)
    d[:, 0] = range(len(a) + 1); d[0, :] = range(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1, -1]


def test_edit_golden():
    gt = np.array([0, 0, 1, 1, 2, 2])  # segments 0 1 2
    assert sm.edit_score(gt, gt) == 100
    # segments 0 1 0 1 2: two insertions -> (1 - 2 / 5) * 100 = 60
    assert sm.edit_score(gt, np.array([0, 1, 0, 1, 1, 2])) == pytest.approx(60)
    # a one-frame segment counts as much as a long one: 0 2 1 2 vs 0 1 2, one insertion -> 1 - 1/4
    assert sm.edit_score(gt, np.array([0, 2, 1, 1, 2, 2])) == pytest.approx(75)


def test_f1_golden():
    gt = np.array([0] * 10 + [1] * 10)
    pred = np.array([0] * 6 + [1] * 14)
    # seg 0: IoU 6/10 = .6; seg 1: IoU 10/14 = .714 -> TP at 10/25/50
    assert sm.f1_counts(gt, pred, 0.5) == (2, 0, 0)
    # a one-frame spurious segment in the middle of phase 1 -> FP, and splits phase 1
    pred2 = np.array([0] * 10 + [1] * 4 + [2] + [1] * 5)
    tp, fp, fn = sm.f1_counts(gt, pred2, 0.5)
    assert (tp, fp, fn) == (2, 2, 0)  # 0: hit; 1 (4 frames) IoU .4 -> FP; 2: FP; 1 (5) IoU .5 hit
    r = sm.segment_scores({"a": gt}, {"a": pred2})
    assert r["f1@50"] == pytest.approx(2 * .5 * 1 / 1.5 * 100)


def test_against_reference_random():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 80))
        gt = np.repeat(rng.integers(0, 4, 8), rng.integers(1, 12, 8))[:n]
        pred = np.where(rng.random(gt.size) < .8, gt, rng.integers(0, 4, gt.size))
        for k in sm.OVERLAPS:
            assert sm.f1_counts(gt, pred, k) == _ref_f1(gt, pred, k)
        a = _ref_segments(list(pred))[0]
        b = _ref_segments(list(gt))[0]
        assert sm.levenshtein(a, b) == _ref_lev(a, b)


def test_counts_summed_over_videos():
    gts = {"a": np.array([0] * 5), "b": np.array([1] * 5)}
    preds = {"a": np.array([0] * 5), "b": np.array([0] * 5)}
    r = sm.segment_scores(gts, preds)
    # TP 1, FP 1, FN 1 summed -> P = R = .5 -> F1 50; edit (100 + 0) / 2
    assert r["f1@10"] == pytest.approx(50) and r["edit"] == pytest.approx(50)
