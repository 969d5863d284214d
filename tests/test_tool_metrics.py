"""Tool AP against scikit-learn on random inputs, including ties and tools without positives."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from surgflow.evaluation import tool_metrics as tm


def test_ap_matches_sklearn_random_and_ties():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 400))
        t = (rng.random(n) < rng.uniform(.05, .7)).astype(int)
        if t.sum() == 0:
            t[0] = 1
        s = rng.random(n) if trial % 2 else np.round(rng.random(n), 1)  # ties on odd trials
        assert tm.average_precision(t, s) == pytest.approx(average_precision_score(t, s))


def test_golden_and_no_positive():
    # scores ranked: pos, neg, pos -> P@1 = 1, P@3 = 2/3 -> AP = .5 * 1 + .5 * 2/3
    assert tm.average_precision([1, 0, 1], [.9, .8, .7]) == pytest.approx(5 / 6)
    assert np.isnan(tm.average_precision([0, 0], [.1, .2]))


def test_map_frame_pooled_skips_tools_without_positive():
    rng = np.random.default_rng(2)
    t = {"a": (rng.random((50, 3)) < .3).astype(float), "b": (rng.random((30, 3)) < .3).astype(float)}
    for v in t:
        t[v][:, 2] = 0
    s = {v: rng.random(t[v].shape) for v in t}
    r = tm.tool_ap(t, s, ["x", "y", "z"])
    tt = np.concatenate([t["a"], t["b"]]); ss = np.concatenate([s["a"], s["b"]])
    assert r["ap"]["x"] == pytest.approx(average_precision_score(tt[:, 0], ss[:, 0]))
    assert np.isnan(r["ap"]["z"])
    assert r["map"] == pytest.approx((r["ap"]["x"] + r["ap"]["y"]) / 2)
