"""Segment metrics of action segmentation (MS-TCN definitions, Farha & Gall, CVPR 2019).

A segment is a maximal run of equal labels. Frames whose ground truth is negative (unlabelled) are
dropped first; labels in `ignore` (e.g. a background class) are removed from the segment lists.

Edit score (per video, percent): (1 - levenshtein(P, Y) / max(|P|, |Y|)) * 100, with P and Y the
    predicted and ground-truth segment label sequences; 100 when both are empty; mean over videos.
F1@k (percent): predicted segments are visited in temporal order; each is matched to the
    ground-truth segment of the same label with the highest IoU (IoU = intersection / extent of the
    two intervals, negative when disjoint); it is a TP when IoU >= k/100 and that ground-truth
    segment is not matched yet, else a FP; FN = unmatched ground-truth segments. TP, FP and FN are
    summed over videos, then F1 = 2 P R / (P + R) with P = TP / (TP + FP), R = TP / (TP + FN).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from surgflow.evaluation.relaxed import segments

OVERLAPS = (0.10, 0.25, 0.50)


def _segs(labels: np.ndarray, ignore: Iterable[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab, s, e = segments(np.asarray(labels, dtype=np.int64))
    ignore = list(ignore)
    if not ignore:
        return lab, s, e
    keep = ~np.isin(lab, ignore)
    return lab[keep], s[keep], e[keep]


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance (insert, delete, substitute all cost 1), one vectorised DP row at a time."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.size > b.size:  # symmetric: loop over the shorter sequence
        a, b = b, a
    cols = np.arange(b.size + 1)
    prev = cols.copy()
    for i in range(1, a.size + 1):
        # best of substitution and deletion, then insertions chain along the row:
        # cur[j] = min_k<=j (base[k] + j - k) = j + cummin(base - k)
        base = np.empty_like(prev)
        base[0] = i
        base[1:] = np.minimum(prev[:-1] + (a[i - 1] != b), prev[1:] + 1)
        prev = np.minimum.accumulate(base - cols) + cols
    return int(prev[-1])


def edit_score(gt: np.ndarray, pred: np.ndarray, ignore: Iterable[int] = ()) -> float:
    """Segmental edit score of one video, percent (see module docstring)."""
    gt = np.asarray(gt, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    keep = gt >= 0
    y = _segs(gt[keep], ignore)[0]
    p = _segs(pred[keep], ignore)[0]
    n = max(y.size, p.size)
    if n == 0:
        return 100.0
    return (1.0 - levenshtein(p, y) / n) * 100.0


def f1_counts(gt: np.ndarray, pred: np.ndarray, overlap: float,
              ignore: Iterable[int] = ()) -> tuple[int, int, int]:
    """(TP, FP, FN) of one video at IoU threshold `overlap` (a fraction in (0, 1]).

    Vectorised form of the MS-TCN loop: each predicted segment's best same-label ground-truth
    segment (highest IoU, first on ties) does not depend on earlier matches, so the sequential
    "first qualifying prediction takes the hit" rule is: TP = number of distinct ground-truth
    segments that are the best match of at least one prediction with IoU >= overlap."""
    gt = np.asarray(gt, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    keep = gt >= 0
    return _f1_counts_segs(_segs(gt[keep], ignore), _segs(pred[keep], ignore), overlap)


def _f1_counts_segs(y, p, overlap: float) -> tuple[int, int, int]:
    yl, ys, ye = y
    pl, ps, pe = p
    if pl.size == 0 or yl.size == 0:
        return 0, int(pl.size), int(yl.size)
    # candidate pairs: ground-truth segments overlapping each predicted one (both lists sorted)
    lo = np.searchsorted(ye, ps, side="right")
    hi = np.searchsorted(ys, pe, side="left")
    n = np.maximum(hi - lo, 0)
    j = np.repeat(np.arange(pl.size), n)
    g = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    same = yl[g] == pl[j]
    j, g = j[same], g[same]
    inter = np.minimum(pe[j], ye[g]) - np.maximum(ps[j], ys[g])
    union = np.maximum(pe[j], ye[g]) - np.minimum(ps[j], ys[g])
    iou = inter / union
    # best pair per predicted segment: highest IoU, lowest ground-truth index on ties
    order = np.lexsort((g, -iou, j))
    j, g, iou = j[order], g[order], iou[order]
    first = np.ones(j.size, dtype=bool)
    first[1:] = j[1:] != j[:-1]
    good = first & (iou >= overlap)
    tp = int(np.unique(g[good]).size)
    return tp, int(pl.size - tp), int(yl.size - tp)


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return 2 * prec * rec / (prec + rec) * 100.0 if prec + rec else 0.0


def segment_scores(gts: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray],
                   overlaps: Sequence[float] = OVERLAPS, ignore: Iterable[int] = ()) -> dict:
    """{"edit": mean edit over videos, "edit_std": sample std over videos,
    "f1@10": ..., "f1@25": ..., "f1@50": ...} (percent; F1 counts summed over videos)."""
    ignore = tuple(ignore)
    edits = []
    counts = np.zeros((len(overlaps), 3), dtype=np.int64)
    for v in gts:
        g = np.asarray(gts[v], dtype=np.int64)
        keep = g >= 0
        y = _segs(g[keep], ignore)  # segments computed once per video
        p = _segs(np.asarray(preds[v], dtype=np.int64)[keep], ignore)
        n = max(y[0].size, p[0].size)
        edits.append((1.0 - levenshtein(p[0], y[0]) / n) * 100.0 if n else 100.0)
        for i, k in enumerate(overlaps):
            counts[i] += _f1_counts_segs(y, p, k)
    edits = np.array(edits, dtype=np.float64)
    out = {"edit": float(edits.mean()) if edits.size else float("nan"),
           "edit_std": float(edits.std(ddof=1)) if edits.size > 1 else float("nan")}
    for i, k in enumerate(overlaps):
        out[f"f1@{int(round(k * 100))}"] = f1_from_counts(*counts[i].tolist())
    return out
