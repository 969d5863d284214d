"""Relaxed-boundary phase metrics of the Cholec80 / M2CAI MATLAB evaluation, in two labelled variants.

The widely copied script (Evaluate.m + Main.m of the M2CAI 2016 challenge, revised for Cholec80)
forgives predictions near a true phase transition. With 1-based phase ids p, diff = pred - gt and a
window of W = round(10 s * fps) frames, for each ground-truth segment of phase p with
t = min(W, segment length):
  - late transition: in the segment's first t frames, diff == -1 becomes 0 (also -2 for p in {6, 7});
  - early transition: meant for the segment's last t frames, diff == +1 becomes 0 (also +2 for
    p in {4, 5, 6, 7}).

`published` reproduces the script exactly, bugs included:
  * early transition: the script writes `curDiff(curDiff(end-t+1:end) == 1) = 0`; MATLAB pads the
    length-t logical mask with false, so frame i of the segment (i < t, 0-based) is zeroed when
    frame L - t + i has the value: the start of the segment is relaxed, not its end;
  * per phase present in the ground truth, TP = #frames of (pred == p or gt == p) whose relaxed
    diff is 0 -- a frame relaxed for another phase counts as TP here too, so a never-predicted
    phase can get non-zero recall and precision can exceed 100 (division by #(pred == p), which
    may be 0: +inf);
  * jaccard = TP / |union|, precision = TP / #(pred == p), recall = TP / #(gt == p), times 100;
    values above 100 (and infinities) are clipped to 100; phases absent from a video's ground
    truth are NaN (0/0 precision stays NaN too);
  * per phase: nanmean over videos; jaccard and recall: plain mean over phases (NaN if a phase is
    in no video), precision: nanmean over phases; their "+-" is the sample std ACROSS PHASES;
  * accuracy = #(relaxed diff == 0) / N per video, mean and sample std across videos.

`corrected` applies the intended windows (early transition in the segment's last t frames) with the
same pair rules, turns them into a relaxed prediction (pred replaced by gt where the relaxed diff is
0) and scores it with the ordinary video-wise protocol of phase_metrics: macro over the chosen
class set per video, mean and sample std across videos, per-phase means over the videos containing
the phase. Every value lies in [0, 1] by construction, nothing needs clipping.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from surgflow.evaluation import phase_metrics

VARIANTS = ("published", "corrected")
WINDOW_SECONDS = 10.0


def window_frames(fps: float, seconds: float = WINDOW_SECONDS) -> int:
    return max(1, int(round(seconds * fps)))


def _pair_rules(p1: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(late values, early values) of diff forgiven for 1-based phase p1 (Cholec80 script rules)."""
    late = (-1, -2) if p1 in (6, 7) else (-1,)
    early = (1, 2) if p1 in (4, 5, 6, 7) else (1,)
    return late, early


def _isin(x: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    # np.isin is slow for one or two values
    m = x == values[0]
    for val in values[1:]:
        m |= x == val
    return m


def segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal labels: (label [S], start [S], end [S]) with exclusive ends."""
    labels = np.asarray(labels)
    if labels.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    return labels[starts], starts, ends


def relaxed_diff(gt: np.ndarray, pred: np.ndarray, fps: float, variant: str = "published") -> np.ndarray:
    """pred - gt with transition errors near ground-truth boundaries set to 0 (int64 [N]).

    gt, pred: 0-based phase ids (the pair rules use p + 1). See the module docstring."""
    if variant not in VARIANTS:
        raise ValueError(f"relaxed variant must be one of {VARIANTS}, got {variant!r}")
    gt = np.asarray(gt, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    diff = pred - gt
    out = diff.copy()
    w = window_frames(fps)
    for lab, s, e in zip(*segments(gt)):
        cur = diff[s:e].copy()
        length = e - s
        t = min(w, length)
        late, early = _pair_rules(int(lab) + 1)
        head = cur[:t]
        head[_isin(head, late)] = 0  # late transition (same in both variants)
        tail_mask = _isin(cur[length - t:], early)
        if variant == "published":
            cur[:t][tail_mask] = 0  # the script's mask lands on the segment's first t frames
        else:
            cur[length - t:][tail_mask] = 0
        out[s:e] = cur
    return out


def published_video(gt: np.ndarray, pred: np.ndarray, fps: float, num_classes: int) -> dict:
    """One video as Evaluate.m computes it (percent, unclipped): jaccard/precision/recall float64 [C]
    (NaN for phases absent from the ground truth, +inf possible) and accuracy."""
    gt, pred = phase_metrics._clean(gt, pred)
    d = relaxed_diff(gt, pred, fps, "published")
    ok = d == 0
    jac = np.full(num_classes, np.nan)
    prec = np.full(num_classes, np.nan)
    rec = np.full(num_classes, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for c in range(num_classes):
            in_gt = gt == c
            n_gt = int(in_gt.sum())
            if n_gt == 0:
                continue
            in_pred = pred == c
            union = in_gt | in_pred
            tp = float(ok[union].sum())
            jac[c] = tp / union.sum() * 100
            prec[c] = np.float64(tp * 100) / np.float64(in_pred.sum())
            rec[c] = tp * 100 / n_gt
    acc = float(ok.mean() * 100) if gt.size else float("nan")
    return {"jaccard": jac, "precision": prec, "recall": rec, "accuracy": acc}


def _nanmean(x: np.ndarray, axis=None):
    x = np.asarray(x, dtype=np.float64)
    n = np.sum(~np.isnan(x), axis=axis)
    s = np.nansum(x, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _nanstd(x: np.ndarray, axis=None):
    x = np.asarray(x, dtype=np.float64)
    n = np.sum(~np.isnan(x), axis=axis)
    m = _nanmean(x, axis=axis)
    mm = np.expand_dims(m, axis) if axis is not None else m
    ss = np.nansum((x - mm) ** 2, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)


def published(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray], fps: float,
              num_classes: int) -> dict:
    """The MATLAB script's numbers over a set of videos (percent), aggregated as Main.m does.

    Returns {"jaccard"|"precision"|"recall": {"mean", "std" (across phases), "per_phase_mean" [C],
    "per_phase_std" [C] (across videos)}, "accuracy": {"mean", "std" (across videos)},
    "per_video": {video: published_video(...)}}."""
    per_video = {v: published_video(gts[v], preds[v], fps, num_classes) for v in gts}
    out: dict = {"per_video": per_video}
    for m in ("jaccard", "precision", "recall"):
        arr = np.array([per_video[v][m] for v in per_video], dtype=np.float64)  # [V, C]
        arr = arr.reshape(len(per_video), num_classes)
        arr[arr > 100] = 100.0  # clips +inf too; NaN stays NaN
        per_phase = _nanmean(arr, axis=0)  # [C]
        per_phase_std = _nanstd(arr, axis=0)
        if m == "precision":
            mean, std = float(_nanmean(per_phase)), float(_nanstd(per_phase))
        else:  # plain mean: one phase missing from every video makes it NaN, as in MATLAB
            mean = float(per_phase.mean())
            std = float(per_phase.std(ddof=1)) if per_phase.size > 1 else float("nan")
        out[m] = {"mean": mean, "std": std, "per_phase_mean": per_phase,
                  "per_phase_std": per_phase_std}
    acc = np.array([per_video[v]["accuracy"] for v in per_video], dtype=np.float64)
    out["accuracy"] = {"mean": float(acc.mean()) if acc.size else float("nan"),
                       "std": float(acc.std(ddof=1)) if acc.size > 1 else float("nan")}
    return out


def relaxed_prediction(gt: np.ndarray, pred: np.ndarray, fps: float) -> np.ndarray:
    """The corrected variant's relaxed prediction: gt where the corrected relaxed diff is 0."""
    gt = np.asarray(gt, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    keep = gt >= 0
    out = pred.copy()
    g, p = gt[keep], pred[keep]
    d = relaxed_diff(g, p, fps, "corrected")
    out[keep] = np.where(d == 0, g, p)
    return out


def corrected(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray], fps: float,
              num_classes: int, gt_only: bool = False) -> dict:
    """Corrected relaxed metrics with video-wise aggregation (fractions in [0, 1]).

    Returns {"videowise": phase_metrics.videowise(...), "per_phase": phase_metrics.per_phase(...)}
    computed on the relaxed predictions."""
    rp = {v: relaxed_prediction(gts[v], preds[v], fps) for v in gts}
    vw = phase_metrics.videowise(gts, rp, num_classes, gt_only)
    return {"videowise": vw, "per_phase": phase_metrics.per_phase(vw["confusions"])}
