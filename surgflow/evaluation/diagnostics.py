"""What a user needs to see that a model misses something, without reading the code.

Pure functions on arrays (no model, no files):
- `phase_diagnostics(gt, pred, phase_names)`: per-phase precision, recall and F1 and the confusion
  matrix (frames of all videos pooled), and which phases of the ground truth a model never predicts
  on some videos, as warnings worded like "ClippingCutting: recall 0 on 5 of 5 test videos";
- `format_diagnostics(diag)`: the terminal/report text of it;
- `validation_trend(values, epochs)`: the training log's note when validation is past its best and
  still falling ("val/accuracy 70.1, 8.2 below best 78.3 at epoch 10, falling for 3 epochs").
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from surgflow.evaluation.phase_metrics import confusion_matrix


def _ratio(a: float, b: float) -> float:
    return 100.0 * a / b if b else float("nan")


def phase_diagnostics(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                      phase_names: Sequence[str], unit: str = "test videos") -> dict:
    """{video: int [N]} ground truth and predictions (0-based ids; gt -1 = unlabelled) ->
    {"phases": names, "confusion": int [P][P] (rows ground truth, columns prediction, frames pooled
    over the videos), "per_phase": {name: {"frames", "predicted", "precision", "recall", "f1"}
    (percent of pooled frames; precision 0 for a phase never predicted, NaN where undefined)}, "zero_recall": {name: {"videos": [...],
    "of": videos whose ground truth contains the phase}} for phases never predicted on some of
    those videos, "warnings": [text], "unit": unit}."""
    names = list(phase_names)
    c = len(names)
    videos = sorted(gt)
    missing = [v for v in videos if v not in pred]
    if missing:
        raise ValueError(f"no prediction for video(s) {', '.join(missing)}")
    total = np.zeros((c, c), np.int64)
    zero: dict = {}
    contains = np.zeros(c, np.int64)
    for v in videos:
        g, p = np.asarray(gt[v]), np.asarray(pred[v])
        if len(g) != len(p):
            raise ValueError(f"{v}: {len(g)} ground-truth frames but {len(p)} predictions")
        cm = confusion_matrix(g, p, c)
        total += cm
        for i in np.flatnonzero(cm.sum(1) > 0):  # phases in this video's ground truth
            contains[i] += 1
            if cm[i, i] == 0:  # recall 0: none of its frames predicted as it
                zero.setdefault(names[i], []).append(v)
    per_phase = {}
    for i, name in enumerate(names):
        tp, frames, predicted = float(total[i, i]), float(total[i].sum()), float(total[:, i].sum())
        # as score.py: a phase of the ground truth never predicted has precision 0
        prec = _ratio(tp, predicted) if predicted else (0.0 if frames else float("nan"))
        rec = _ratio(tp, frames)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else (0.0 if frames or predicted else float("nan"))
        per_phase[name] = {"frames": int(frames), "predicted": int(predicted), "precision": prec,
                           "recall": rec, "f1": f1}
    zero_recall = {n: {"videos": vs, "of": int(contains[names.index(n)])} for n, vs in zero.items()}
    warnings = [f"{n}: recall 0 on {len(z['videos'])} of {z['of']} {unit}"
                + (f" ({', '.join(z['videos'])})" if len(z["videos"]) < z["of"] else "")
                for n, z in zero_recall.items()]
    return {"phases": names, "confusion": total.tolist(), "per_phase": per_phase,
            "zero_recall": zero_recall, "warnings": warnings, "unit": unit,
            "num_videos": len(videos)}


def _f(x: float, width: int) -> str:
    return f"{'n/a':>{width}}" if x is None or not math.isfinite(x) else f"{x:{width}.1f}"


def format_diagnostics(diag: dict, label: Optional[str] = None) -> str:
    """Per-phase table with the confusion matrix beside it, then one WARNING line per phase that
    is never predicted on some videos; every line starts with `[label]` when labelled."""
    names, cm = diag["phases"], diag["confusion"]
    width = max(6, len(str(max((max(r) for r in cm), default=0))) + 1)
    lines = [f"phase diagnostics: frames of {diag['num_videos']} {diag['unit']} pooled; confusion "
             f"rows = ground truth, columns = predicted phase #",
             f"  {'#':>2} {'phase':<26}{'frames':>8}{'prec %':>8}{'rec %':>8}{'F1 %':>8}  |"
             + "".join(f"{j:>{width}}" for j in range(len(names)))]
    for i, name in enumerate(names):
        e = diag["per_phase"][name]
        lines.append(f"  {i:>2} {name[:25]:<26}{e['frames']:>8}{_f(e['precision'], 8)}"
                     f"{_f(e['recall'], 8)}{_f(e['f1'], 8)}  |" + "".join(f"{x:>{width}}" for x in cm[i]))
    lines += [f"WARNING {w}: none of its frames predicted as it" for w in diag["warnings"]]
    if label:
        lines = [f"[{label}] {ln}" for ln in lines]
    return "\n".join(lines)


def validation_trend(values: Sequence[float], epochs: Optional[Sequence[float]] = None,
                     metric: str = "val/accuracy", higher_is_better: bool = True,
                     min_falls: int = 2) -> Optional[str]:
    """A note when the last validation value is below its best and has got worse at each of the
    last `min_falls` (or more) validations; None otherwise (still improving, flat, or noise).
    values: one per validation, in order (NaN skipped); epochs: their epoch numbers (default 1..)."""
    pts = [(e, float(v)) for e, v in zip(epochs if epochs is not None else range(1, len(values) + 1),
                                         values) if v is not None and math.isfinite(float(v))]
    if len(pts) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    best_e, best = max(pts, key=lambda p: sign * p[1])  # the first of equal bests
    last_e, last = pts[-1]
    falls = 0
    for (_, a), (_, b) in zip(pts[-2::-1], pts[::-1]):  # walk back while each step got worse
        if sign * (b - a) < 0:
            falls += 1
        else:
            break
    if falls < min_falls or sign * (last - best) >= 0:
        return None
    span = last_e - pts[-1 - falls][0]  # epochs since the fall began (validations may be sparser)
    return (f"{metric} {last:.4g}, {abs(best - last):.4g} {'below' if higher_is_better else 'above'} "
            f"best {best:.4g} at epoch {best_e:g}, falling for {span:g} epochs")
