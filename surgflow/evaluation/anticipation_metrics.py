"""Instrument-anticipation errors (Rivoir et al., MICCAI 2020; docs/DOMAIN.md section 5), in minutes.

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
    MAE     0 < y <= h                 (every frame without the instrument)
Boundaries are strict. With `fps` the frames are classified by their integer frame distance
d = round(y * 60 fps) against the horizon in frames H = 60 fps h (eMAE: 10 d < H, mMAE: H < 10 d < 9 H,
dMAE: 9 H < 10 d, y = h: d >= H), so float32 targets cannot cross a boundary (at h = 3 a frame exactly
at 0.1 h = 18 frames is in no range). Without `fps` y is compared in float64 with a tolerance of
1e-5 minutes (exact for targets on any frame grid up to 1000 fps). pMAE's bounds on the prediction
are strict with a tolerance of 1e-9 h, so a prediction of exactly 0.1h or 0.9h (a perfect prediction
of a boundary frame) is in no range whatever its binary rounding. A metric whose frame selection
is empty is NaN and is left out of means (nanmean).

Predictions are scored as given unless `clip` (then clipped to [0, h] first, as some published
code does). Pooling: "frames" (default) concatenates all frames of all videos per instrument;
"videos" computes the metrics per video and averages over the videos where they are defined.

Mean over instruments (`wmae`): "per_instrument" (default, the MICCAI 2020 definition) is the
nanmean over instruments of each instrument's wMAE, so an instrument without in-horizon frames
drops out of the wMAE mean; "pitfalls_bn" (that paper's meter) averages inMAE and outMAE over
instruments first and then takes (mean inMAE + mean outMAE) / 2. Both agree when every
instrument has both kinds of frames. All other means are nanmeans over instruments.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

METRICS = ("inMAE", "outMAE", "wMAE", "eMAE", "pMAE", "dMAE", "mMAE", "MAE")
WMAE_CONVENTIONS = ("per_instrument", "pitfalls_bn")
_TOL = 1e-5


def _check_horizon(horizon: float) -> float:
    h = float(horizon)
    if not np.isfinite(h) or h <= 0:
        raise ValueError(f"horizon must be > 0 minutes, got {horizon}")
    return h


def _masks(y: np.ndarray, yhat: np.ndarray, h: float, fps: float | None) -> dict[str, np.ndarray]:
    if fps is not None:  # integer frame distance: exact boundaries whatever the target's dtype
        frames_per_min = 60.0 * float(fps)
        d = np.rint(y * frames_per_min)
        big_h = h * frames_per_min  # the horizon in frames; 1/6 min * 60 = 10.000000000000002
        big_h = float(np.rint(big_h)) if abs(big_h - np.rint(big_h)) < 1e-6 else big_h
        pos = d > 0
        out = (d >= big_h) | (y >= h - _TOL)  # the cap y = h may lie off the frame grid
        ten_d = 10.0 * d
        e, m, dd = ten_d < big_h, (ten_d > big_h) & (ten_d < 9.0 * big_h), ten_d > 9.0 * big_h
    else:
        pos = y > _TOL
        out = y >= h - _TOL
        e = y < 0.1 * h - _TOL
        m = (y > 0.1 * h + _TOL) & (y < 0.9 * h - _TOL)
        dd = y > 0.9 * h + _TOL
    inside = pos & ~out
    eps = 1e-9 * h  # a prediction written as 0.1h or 0.9h is on the boundary whatever its rounding
    return {
        "inMAE": inside,
        "outMAE": out,
        "eMAE": inside & e,
        "dMAE": inside & dd,
        "mMAE": inside & m,
        "pMAE": pos & (yhat > 0.1 * h + eps) & (yhat < 0.9 * h - eps),
        "MAE": pos,
    }


def _sums(y: np.ndarray, yhat: np.ndarray, h: float, fps: float | None,
          clip: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (sum of |error| [I], frame count [I])} over frames y, yhat [N, I] (wMAE excluded)."""
    if clip:
        yhat = np.clip(yhat, 0.0, h)
    err = np.abs(yhat - y)
    return {name: (np.where(m, err, 0.0).sum(0), m.sum(0)) for name, m in _masks(y, yhat, h, fps).items()}


def _from_sums(sums: Mapping[str, tuple], i: int) -> dict[str, float]:
    res = {name: float(s[i] / c[i]) if c[i] else float("nan") for name, (s, c) in sums.items()}
    res["wMAE"] = _pair_mean(res["inMAE"], res["outMAE"])
    return {k: res[k] for k in METRICS}


def anticipation_errors(y_true: np.ndarray, y_pred: np.ndarray, horizon: float,
                        fps: float | None = None, clip: bool = False) -> dict[str, float]:
    """The metrics of one instrument over frames y_true [N], y_pred [N] (minutes)."""
    h = _check_horizon(horizon)
    y = np.asarray(y_true, dtype=np.float64).ravel()
    yhat = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"ground truth has {y.size} frames, prediction {yhat.size}")
    return _from_sums(_sums(y[:, None], yhat[:, None], h, fps, clip), 0)


def _pair_mean(a: float, b: float) -> float:
    return float((a + b) / 2) if np.isfinite(a) and np.isfinite(b) else float("nan")


def _nanmean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def instrument_mean(per_inst: Mapping[str, Mapping[str, float]], wmae: str = "per_instrument") -> dict:
    """{metric: mean over instruments} of per-instrument results (see `wmae` in the docstring)."""
    if wmae not in WMAE_CONVENTIONS:
        raise ValueError(f"wmae must be one of {WMAE_CONVENTIONS}, got {wmae!r}")
    mean = {m: _nanmean(r[m] for r in per_inst.values()) for m in METRICS}
    if wmae == "pitfalls_bn":
        mean["wMAE"] = _pair_mean(mean["inMAE"], mean["outMAE"])
    return mean


def anticipation_scores(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray],
                        instruments: Sequence[str], horizon: float, pooling: str = "frames",
                        fps: float | None = None, clip: bool = False,
                        wmae: str = "per_instrument") -> dict:
    """gts, preds: {video: float [N, I] minutes}. Returns {"instruments": {name: {metric: value}},
    "mean": {metric: mean over instruments}, "per_video": {video: {"instruments": ..., "mean": ...}}}
    (minutes; per_video pools the frames of that video only)."""
    if pooling not in ("frames", "videos"):
        raise ValueError(f"pooling must be 'frames' or 'videos', got {pooling!r}")
    h = _check_horizon(horizon)
    videos = list(gts)
    k = len(instruments)
    y = {v: np.asarray(gts[v], dtype=np.float64).reshape(-1, k) for v in videos}
    yh = {v: np.asarray(preds[v], dtype=np.float64).reshape(-1, k) for v in videos}
    sums = {v: _sums(y[v], yh[v], h, fps, clip) for v in videos}  # all instruments at once
    per_video = {}
    for v in videos:
        inst = {n: _from_sums(sums[v], i) for i, n in enumerate(instruments)}
        per_video[v] = {"instruments": inst, "mean": instrument_mean(inst, wmae)}
    per_inst = {}
    if pooling == "frames":  # pooled over frames = summed errors / summed counts
        total = {m: (sum(sums[v][m][0] for v in videos), sum(sums[v][m][1] for v in videos))
                 for m in sums[videos[0]]} if videos else {}
        for i, name in enumerate(instruments):
            per_inst[name] = _from_sums(total, i) if videos else {m: float("nan") for m in METRICS}
    else:
        for name in instruments:
            rows = [per_video[v]["instruments"][name] for v in videos]
            per_inst[name] = {m: _nanmean(r[m] for r in rows) for m in METRICS}
            # wMAE stays (inMAE + outMAE) / 2 of the video-averaged values
            per_inst[name]["wMAE"] = _pair_mean(per_inst[name]["inMAE"], per_inst[name]["outMAE"])
    return {"instruments": per_inst, "mean": instrument_mean(per_inst, wmae), "per_video": per_video}
