"""Tool-presence metrics: average precision per tool and mAP, frame-pooled.

AP of one tool (the step-wise definition of scikit-learn's average_precision_score, no
interpolation): sort frames by descending score; at each distinct score threshold n,
P_n = TP / (TP + FP) and R_n = TP / #positives; AP = sum_n (R_n - R_{n-1}) P_n.
A tool without a single positive frame has undefined AP (NaN) and is left out of the mAP
(mAP = mean over tools with a defined AP). Frame-pooled: all frames of all videos concatenated.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def average_precision(target: np.ndarray, score: np.ndarray) -> float:
    """AP of one binary target [N] (0/1) given scores [N]; NaN when there is no positive."""
    target = np.asarray(target).ravel() > 0.5
    score = np.asarray(score, dtype=np.float64).ravel()
    if target.shape != score.shape:
        raise ValueError(f"target has {target.size} frames, scores {score.size}")
    n_pos = int(target.sum())
    if n_pos == 0:
        return float("nan")
    # thresholds = distinct scores, descending; counts of frames (all / positive) scoring >= each,
    # from two value sorts + binary search (no argsort: about 2x faster on long videos)
    s_all = np.sort(score)
    s_pos = np.sort(score[target])
    thr = s_all[np.r_[s_all[1:] != s_all[:-1], True]][::-1]
    n_ge = s_all.size - np.searchsorted(s_all, thr, side="left")
    tps = n_pos - np.searchsorted(s_pos, thr, side="left")
    fps = n_ge - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tool_ap(targets: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray],
            tool_names: Sequence[str]) -> dict:
    """Frame-pooled AP per tool and mAP.

    targets, scores: {video: [N, K]}. Returns {"ap": {tool: AP}, "map": mAP} (fractions)."""
    videos = list(targets)
    k = len(tool_names)
    t = np.concatenate([np.asarray(targets[v], dtype=np.float64).reshape(-1, k) for v in videos])
    s = np.concatenate([np.asarray(scores[v], dtype=np.float64).reshape(-1, k) for v in videos])
    ap = {name: average_precision(t[:, i], s[:, i]) for i, name in enumerate(tool_names)}
    vals = np.array([a for a in ap.values() if np.isfinite(a)])
    return {"ap": ap, "map": float(vals.mean()) if vals.size else float("nan")}
