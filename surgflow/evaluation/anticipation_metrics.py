"""Instrument-anticipation errors (Rivoir et al., MICCAI 2020; DOMAIN.md section 5), in minutes.

y = true remaining time until the instrument's next use, clipped at the horizon h (0 while it is
present); yhat = predicted remaining time. Frames with the instrument present (y = 0) are excluded
from every metric. Per instrument, MAE = mean |yhat - y| over the frames selected by:
    inMAE   0 < y < h                  (instrument expected within the horizon)
    outMAE  y = h                      (not expected within the horizon)
    wMAE    (inMAE + outMAE) / 2
    eMAE    0 < y < 0.1 h              (imminent use)
    dMAE    0.9 h < y < h              (distant use)
    mMAE    0.1 h < y < 0.9 h          (middle range)
    pMAE    0.1 h < yhat < 0.9 h, y > 0 (frames where the model predicts an upcoming use)
"y = h" is tested with a tolerance of 1e-4 minutes (targets are float32). A metric whose frame
selection is empty is NaN and is left out of means (nanmean).

Pooling: "frames" (default) concatenates all frames of all videos per instrument; "videos" computes
the metrics per video and averages over the videos where they are defined. The two are not
comparable; the scoring JSON states which one was used. The mean over instruments is a nanmean.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

METRICS = ("inMAE", "outMAE", "wMAE", "eMAE", "pMAE", "dMAE", "mMAE")
_TOL = 1e-4


def _masks(y: np.ndarray, yhat: np.ndarray, h: float) -> dict[str, np.ndarray]:
    pos = y > _TOL
    out = y >= h - _TOL
    inside = pos & ~out
    return {
        "inMAE": inside,
        "outMAE": out,
        "eMAE": pos & (y < 0.1 * h),
        "dMAE": inside & (y > 0.9 * h),
        "mMAE": (y > 0.1 * h) & (y < 0.9 * h),
        "pMAE": pos & (yhat > 0.1 * h) & (yhat < 0.9 * h),
    }


def anticipation_errors(y_true: np.ndarray, y_pred: np.ndarray, horizon: float) -> dict[str, float]:
    """The seven metrics of one instrument over frames y_true [N], y_pred [N] (minutes)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    yhat = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"ground truth has {y.size} frames, prediction {yhat.size}")
    err = np.abs(yhat - y)
    res = {}
    for name, m in _masks(y, yhat, horizon).items():
        res[name] = float(err[m].mean()) if m.any() else float("nan")
    vals = [res["inMAE"], res["outMAE"]]
    res["wMAE"] = float(np.mean(vals)) if all(np.isfinite(vals)) else float("nan")
    return {k: res[k] for k in METRICS}


def _nanmean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def anticipation_scores(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray],
                        instruments: Sequence[str], horizon: float, pooling: str = "frames") -> dict:
    """gts, preds: {video: float [N, I] minutes}. Returns {"instruments": {name: {metric: value}},
    "mean": {metric: nanmean over instruments}} (minutes)."""
    if pooling not in ("frames", "videos"):
        raise ValueError(f"pooling must be 'frames' or 'videos', got {pooling!r}")
    videos = list(gts)
    k = len(instruments)
    per_inst = {}
    if pooling == "frames":
        y = np.concatenate([np.asarray(gts[v], dtype=np.float64).reshape(-1, k) for v in videos])
        yh = np.concatenate([np.asarray(preds[v], dtype=np.float64).reshape(-1, k) for v in videos])
        for i, name in enumerate(instruments):
            per_inst[name] = anticipation_errors(y[:, i], yh[:, i], horizon)
    else:
        for i, name in enumerate(instruments):
            rows = [anticipation_errors(np.asarray(gts[v]).reshape(-1, k)[:, i],
                                        np.asarray(preds[v]).reshape(-1, k)[:, i], horizon)
                    for v in videos]
            per_inst[name] = {m: _nanmean(r[m] for r in rows) for m in METRICS}
            # wMAE stays (inMAE + outMAE) / 2 of the video-averaged values
            vals = [per_inst[name]["inMAE"], per_inst[name]["outMAE"]]
            per_inst[name]["wMAE"] = float(np.mean(vals)) if all(np.isfinite(vals)) else float("nan")
    mean = {m: _nanmean(per_inst[n][m] for n in instruments) for m in METRICS}
    return {"instruments": per_inst, "mean": mean}
