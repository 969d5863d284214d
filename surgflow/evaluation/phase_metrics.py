"""Phase-recognition metrics over integer label arrays (docs/DOMAIN.md section 6).

All functions take 0-based phase ids (int arrays of equal length) and return fractions in [0, 1];
the scoring drivers (score.py) convert to percent. Frames whose ground truth is negative
(IGNORE_INDEX = -1, unlabelled) are dropped before anything is counted.

Definitions (per class c, counted over the frames of one video, or over all frames when pooled):
    TP_c = #(gt == c and pred == c), FP_c = #(gt != c and pred == c), FN_c = #(gt == c and pred != c)
    precision_c = TP / (TP + FP)      recall_c = TP / (TP + FN)
    jaccard_c   = TP / (TP + FP + FN) f1_c     = 2 TP / (2 TP + FP + FN)
    A 0/0 ratio counts as 0 (scikit-learn's zero_division=0): a ground-truth phase that is never
    predicted has precision 0; a predicted phase absent from the ground truth has recall 0.
    accuracy = #(gt == pred) / #frames.
Macro metrics are the unweighted mean of the per-class values over a class set:
    "union"   (default): phases in ground truth union prediction, so a phase predicted but absent
              from the ground truth scores 0 on every metric and pulls the mean down;
    "gt":     phases present in the ground truth only.
F1 is the per-class F1 averaged (as scikit-learn's average="macro"), not the F1 of macro P and R.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

METRICS = ("accuracy", "precision", "recall", "jaccard", "f1")
CLASS_METRICS = ("precision", "recall", "jaccard", "f1")


def _clean(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt).astype(np.int64, copy=False).ravel()
    pred = np.asarray(pred).astype(np.int64, copy=False).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} frames, prediction {pred.size}")
    keep = gt >= 0
    return gt[keep], pred[keep]


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C] counts, rows = ground truth, columns = prediction (unlabelled gt dropped).

    Predictions outside [0, C) raise ValueError (a decoding bug, never silently dropped)."""
    gt, pred = _clean(gt, pred)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted phase ids must lie in [0, {num_classes}), "
                         f"got {pred.min()}..{pred.max()}")
    if gt.size and gt.max() >= num_classes:
        raise ValueError(f"ground-truth phase ids must lie in [0, {num_classes}), got max {gt.max()}")
    return np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0/0 -> 0 (scikit-learn zero_division=0)
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision/recall/jaccard/f1 (float64 [C]) plus gt/pred presence masks."""
    tp = np.diag(cm).astype(np.float64)
    gt_count = cm.sum(axis=1).astype(np.float64)
    pred_count = cm.sum(axis=0).astype(np.float64)
    fp = pred_count - tp
    fn = gt_count - tp
    return {
        "precision": _ratio(tp, pred_count),
        "recall": _ratio(tp, gt_count),
        "jaccard": _ratio(tp, tp + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "in_gt": gt_count > 0,
        "in_pred": pred_count > 0,
    }


def macro_from_confusion(cm: np.ndarray, gt_only: bool = False) -> dict[str, float]:
    """Accuracy and macro precision/recall/jaccard/f1 from a confusion matrix.

    Class set: ground truth union prediction (default) or ground truth only (`gt_only`).
    Returns NaN metrics for an empty confusion matrix."""
    total = cm.sum()
    pc = per_class_from_confusion(cm)
    classes = pc["in_gt"] if gt_only else (pc["in_gt"] | pc["in_pred"])
    out = {"accuracy": float(np.trace(cm) / total) if total else float("nan")}
    for m in CLASS_METRICS:
        out[m] = float(pc[m][classes].mean()) if classes.any() else float("nan")
    return out


def video_metrics(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                  gt_only: bool = False) -> dict[str, float]:
    """Accuracy and macro metrics of one video (see the module docstring for the class set)."""
    return macro_from_confusion(confusion_matrix(gt, pred, num_classes), gt_only)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) of the finite values; NaN std for n < 2."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if v.size else float("nan")
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return {"mean": mean, "std": std, "n": int(v.size)}


def videowise(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray], num_classes: int,
              gt_only: bool = False) -> dict:
    """Video-wise protocol: per video accuracy + macro metrics, then mean and sample std over
    videos (the std's axis is videos).

    Returns {"per_video": {video: {metric: value}}, "summary": {metric: {mean, std, n}},
             "confusions": {video: int64 [C, C]}}."""
    per_video, confusions = {}, {}
    for v in gts:
        cm = confusion_matrix(gts[v], preds[v], num_classes)
        confusions[v] = cm
        per_video[v] = macro_from_confusion(cm, gt_only)
    summary = {m: mean_std([per_video[v][m] for v in per_video]) for m in METRICS}
    return {"per_video": per_video, "summary": summary, "confusions": confusions}


def per_phase(confusions: Mapping[str, np.ndarray]) -> dict:
    """Per phase over videos: per video and phase, then, for each phase, mean and sample std over
    the videos whose ground truth contains that phase (absent there = undefined, not zero);
    then the mean over phases, whose std is across phases (not videos).

    Returns {"phases": {metric: {"mean": [C], "std": [C], "n": [C]}},
             "summary": {metric: {mean, std, n}}} with NaN for phases in no video's ground truth."""
    cms = list(confusions.values())
    num_classes = cms[0].shape[0] if cms else 0
    stacks = {m: [] for m in CLASS_METRICS}
    present = []
    for cm in cms:
        pc = per_class_from_confusion(cm)
        present.append(pc["in_gt"])
        for m in CLASS_METRICS:
            stacks[m].append(pc[m])
    present = np.array(present, dtype=bool).reshape(len(cms), num_classes)
    phases, summary = {}, {}
    for m in CLASS_METRICS:
        vals = np.array(stacks[m], dtype=np.float64).reshape(len(cms), num_classes)
        vals[~present] = np.nan
        stats = [mean_std(vals[:, c]) for c in range(num_classes)]
        phases[m] = {k: np.array([s[k] for s in stats]) for k in ("mean", "std", "n")}
        summary[m] = mean_std(phases[m]["mean"])
    return {"phases": phases, "summary": summary}


def frame_pooled(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray], num_classes: int,
                 gt_only: bool = False) -> dict[str, float]:
    """Frame-pooled protocol: all frames of all videos concatenated, then accuracy and macro
    metrics over the pooled class set (long videos weigh more)."""
    cm = sum((confusion_matrix(gts[v], preds[v], num_classes) for v in gts),
             np.zeros((num_classes, num_classes), dtype=np.int64))
    return macro_from_confusion(cm, gt_only)
