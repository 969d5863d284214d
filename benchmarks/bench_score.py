"""Scoring speed: 80 videos x 3,000 frames with every metric family (target: < 2 s in total).

Phase predictions are the ground truth with shifted boundaries and 5 % flicker (many short
segments: the hard case for the segment metrics). Run: python benchmarks/bench_score.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from surgflow.evaluation import score
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS


def make_data(videos: int, frames: int, seed: int = 0):
    from surgflow.data.targets import anticipation_targets

    rng = np.random.default_rng(seed)
    gt, pred, tgt, tprob, agt, apred = {}, {}, {}, {}, {}, {}
    for i in range(videos):
        v = f"video{i + 1:02d}"
        cuts = np.sort(rng.choice(np.arange(1, frames), 6, replace=False))
        g = np.searchsorted(cuts, np.arange(frames), side="right")  # phases 0..6 in order
        shifted = np.searchsorted(cuts + rng.integers(-20, 20, 6), np.arange(frames), side="right")
        flick = rng.random(frames) < 0.05
        p = np.where(flick, rng.integers(0, 7, frames), np.clip(shifted, 0, 6))
        gt[v], pred[v] = g, p
        t = (rng.random((frames, 7)) < 0.2).astype(np.float32)
        tgt[v], tprob[v] = t, np.clip(t * 0.6 + rng.random((frames, 7)) * 0.5, 0, 1)
        cols = [CHOLEC80_TOOLS.index(n) for n in ANTICIPATION_INSTRUMENTS]
        y = anticipation_targets(t[:, cols] > 0, 1.0, 3.0)
        agt[v], apred[v] = y, np.clip(y + rng.normal(0, 0.3, y.shape), 0, 3)
    return gt, pred, tgt, tprob, agt, apred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--videos", type=int, default=80)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    gt, pred, tgt, tprob, agt, apred = make_data(a.videos, a.frames)
    families = {
        "phase (video, per-phase, frame, segments)":
            lambda: score.score_phase(gt, pred, CHOLEC80_PHASES, 1.0),
        "relaxed published":
            lambda: score._relaxed_block("published", gt, pred, 1.0, CHOLEC80_PHASES, False),
        "relaxed corrected":
            lambda: score._relaxed_block("corrected", gt, pred, 1.0, CHOLEC80_PHASES, False),
        "tools AP / mAP": lambda: score.score_tools(tgt, tprob, CHOLEC80_TOOLS),
        "anticipation (7 MAEs x 5 instr.)":
            lambda: score.score_anticipation(agt, apred, ANTICIPATION_INSTRUMENTS, 3.0),
    }
    best = {}
    for name, fn in families.items():
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        best[name] = min(ts)
    # everything once, as `surgflow score` for all tasks with both relaxed variants would do
    t0 = time.perf_counter()
    r = score.score_phase(gt, pred, CHOLEC80_PHASES, 1.0, relaxed="published")
    r["relaxed_corrected"] = score._relaxed_block("corrected", gt, pred, 1.0, CHOLEC80_PHASES, False)
    score.score_tools(tgt, tprob, CHOLEC80_TOOLS)
    score.score_anticipation(agt, apred, ANTICIPATION_INSTRUMENTS, 3.0)
    total = time.perf_counter() - t0
    segs = sum(int((np.diff(p) != 0).sum()) + 1 for p in pred.values())
    print(f"scoring {a.videos} videos x {a.frames} frames ({segs} predicted segments), "
          f"best of {a.repeats}")
    print(f"{'metric family':<44}{'seconds':>9}")
    for name, t in best.items():
        print(f"{name:<44}{t:9.3f}")
    print(f"{'ALL families (both relaxed variants), once':<44}{total:9.3f}   target < 2 s: "
          f"{'PASS' if total < 2 else 'FAIL'}")
    print(f"(sanity: video accuracy {r['video']['accuracy']['mean']:.2f}, "
          f"edit {r['segments']['edit']:.2f})")


if __name__ == "__main__":
    main()
