"""Independent oracles for the anticipation errors and the phase metrics, and a random cross-check
of `surgflow.evaluation.score` against them (issue 11).

The oracles share no code with surgflow.evaluation: plain Python loops over frames, exact
fractions for the anticipation targets and their boundaries (a frame exactly at 0.1h is in no
range), dictionaries of counts for the phase metrics. Run as a script to print the counts:
    PYTHONPATH=. python tests/oracle_scoring.py --cases 400
"""
from __future__ import annotations

import argparse
import inspect
import math
import random
from fractions import Fraction

import numpy as np

ANTIC = ("inMAE", "outMAE", "wMAE", "eMAE", "pMAE", "dMAE", "mMAE", "MAE")
PHASE_CLASS = ("precision", "recall", "jaccard", "f1")


# ---------------------------------------------------------------- anticipation oracle

def oracle_targets(present: list[bool]) -> list[int | None]:
    """Frames to the next use (0 while present), None after the last use."""
    out, nxt = [None] * len(present), None
    for t in range(len(present) - 1, -1, -1):
        if present[t]:
            nxt = t
        out[t] = None if nxt is None else nxt - t
    return out


def _mean(xs):
    return sum(xs) / len(xs) if xs else math.nan


class Target:
    """Exact target y = min(h, d / (60 fps)) minutes, compared in integers: with the horizon in
    frames H = Hn / Hd, y = h iff d * Hd >= Hn, and 0.1h < y iff Hn < 10 d Hd, and so on."""

    def __init__(self, fps: Fraction, h: Fraction):
        self.per_min, self.h = 60 * fps, h
        H = h * self.per_min
        self.hn, self.hd = H.numerator, H.denominator
        self._float: dict = {}

    def value(self, d: int | None) -> Fraction:
        return self.h if d is None or d * self.hd >= self.hn else Fraction(d) / self.per_min

    def as_float(self, d) -> float:
        if d not in self._float:
            self._float[d] = float(self.value(d))
        return self._float[d]


def oracle_errors(dist: list, yhat: list[float], tg: Target, clip: bool) -> dict:
    sel = {m: [] for m in ANTIC if m != "wMAE"}
    h = tg.h
    p_lo, p_hi = h / 10 + h / 10**9, 9 * h / 10 - h / 10**9  # pMAE bounds, documented tolerance
    f_lo, f_hi = float(p_lo), float(p_hi)
    for d, p in zip(dist, yhat):
        if clip:
            p = min(max(p, 0.0), float(h))
        if d == 0:
            continue
        e = abs(p - tg.as_float(d))
        sel["MAE"].append(e)
        if d is None or d * tg.hd >= tg.hn:
            sel["outMAE"].append(e)
        else:
            sel["inMAE"].append(e)
            ten = 10 * d * tg.hd
            if ten < tg.hn:
                sel["eMAE"].append(e)
            if tg.hn < ten < 9 * tg.hn:
                sel["mMAE"].append(e)
            if ten > 9 * tg.hn:
                sel["dMAE"].append(e)
        near = abs(p - f_lo) < 1e-6 or abs(p - f_hi) < 1e-6  # exact arithmetic only near a bound
        if (p_lo < Fraction(p) < p_hi) if near else (f_lo < p < f_hi):
            sel["pMAE"].append(e)
    r = {m: _mean(v) for m, v in sel.items()}
    r["wMAE"] = (r["inMAE"] + r["outMAE"]) / 2  # NaN when either is
    return r


def _nanmean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return _mean(xs)


def oracle_anticipation(y: dict, yhat: dict, k: int, tg: Target, pooling: str, clip: bool,
                        wmae: str) -> dict:
    """y: {video: [[distance] * k per frame]}, yhat: floats alike -> {"instruments", "mean"}."""
    inst = []
    for i in range(k):
        if pooling == "frames":
            yy = [row[i] for v in y for row in y[v]]
            pp = [row[i] for v in y for row in yhat[v]]
            inst.append(oracle_errors(yy, pp, tg, clip))
        else:
            per = [oracle_errors([r[i] for r in y[v]], [r[i] for r in yhat[v]], tg, clip) for v in y]
            r = {m: _nanmean([p[m] for p in per]) for m in ANTIC}
            r["wMAE"] = (r["inMAE"] + r["outMAE"]) / 2
            inst.append(r)
    mean = {m: _nanmean([r[m] for r in inst]) for m in ANTIC}
    if wmae == "pitfalls_bn":
        mean["wMAE"] = (mean["inMAE"] + mean["outMAE"]) / 2
    return {"instruments": inst, "mean": mean}


# ---------------------------------------------------------------- phase oracle

def _class_metrics(pairs, c):
    tp = sum(1 for g, p in pairs if g == c and p == c)
    fp = sum(1 for g, p in pairs if g != c and p == c)
    fn = sum(1 for g, p in pairs if g == c and p != c)
    div = lambda a, b: a / b if b else 0.0  # noqa: E731 (0/0 = 0)
    return {"precision": div(tp, tp + fp), "recall": div(tp, tp + fn),
            "jaccard": div(tp, tp + fp + fn), "f1": div(2 * tp, 2 * tp + fp + fn)}


def _macro(pairs, gt_only):
    classes = sorted({g for g, _ in pairs} | (set() if gt_only else {p for _, p in pairs}))
    out = {"accuracy": _mean([1.0 if g == p else 0.0 for g, p in pairs])}
    per = {c: _class_metrics(pairs, c) for c in classes}
    for m in PHASE_CLASS:
        out[m] = _mean([per[c][m] for c in classes])
    return out


def _std(xs):
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 2:
        return math.nan
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))


def oracle_phase(gts: dict, preds: dict, num_classes: int, gt_only: bool) -> dict:
    pairs = {v: [(int(g), int(p)) for g, p in zip(gts[v], preds[v]) if g >= 0] for v in gts}
    vid = {v: _macro(pairs[v], gt_only) for v in gts}
    res = {"video": {m: (_nanmean([vid[v][m] for v in gts]), _std([vid[v][m] for v in gts]))
                     for m in ("accuracy",) + PHASE_CLASS}}
    per_phase = {}
    for c in range(num_classes):
        vals = {m: [_class_metrics(pairs[v], c)[m] for v in gts if any(g == c for g, _ in pairs[v])]
                for m in PHASE_CLASS}
        per_phase[c] = {m: _mean(vals[m]) for m in PHASE_CLASS}
    res["per_phase"] = per_phase
    res["per_phase_mean"] = {m: (_nanmean([per_phase[c][m] for c in per_phase]),
                                 _std([per_phase[c][m] for c in per_phase])) for m in PHASE_CLASS}
    res["frame"] = _macro([pr for v in gts for pr in pairs[v]], gt_only)
    return res


# ---------------------------------------------------------------- random cross-check

def _close(a, b, tol):
    a = math.nan if a is None else float(a)
    b = math.nan if b is None else float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def _random_anticipation_case(rng: random.Random):
    fps = rng.choice([Fraction(1), Fraction(1), Fraction(1, 2), Fraction(2), Fraction(5), Fraction(25)])
    if rng.random() < 0.4:
        h = Fraction(rng.choice([3, 5]))  # the literature's horizons
    else:  # horizons of 10..200 frames, so 0.1h and 0.9h often fall on frames
        h = Fraction(rng.choice([10, 20, 30, 50, 60, 100, 180, 200]), 1) / (60 * fps)
    H = int(h * 60 * fps) if (h * 60 * fps).denominator == 1 else int(h * 60 * fps) + 1
    k = rng.randint(1, 3)
    videos = {}
    for vi in range(rng.randint(1, 3)):
        n = rng.randint(1, min(2 * H + 30, 450))
        dens = rng.choice([0.0, 0.005, 0.02, 0.1])
        pres = [[rng.random() < dens for _ in range(k)] for _ in range(n)]
        if rng.random() < 0.5:  # a use at the very end, as in the repro
            pres[-1][rng.randrange(k)] = True
        videos[f"v{vi}"] = pres
    return fps, h, k, videos


def _random_predictions(rng: random.Random, y: list[list], tg: Target):
    kind = rng.choice(["perfect", "noise", "zero", "wild", "boundary"])
    h = tg.h
    out = []
    for row in y:
        r = []
        for d in row:
            f = tg.as_float(d)
            if kind == "perfect":
                r.append(f)
            elif kind == "noise":
                r.append(f + rng.gauss(0, 0.3 * float(h)))
            elif kind == "zero":
                r.append(0.0)
            elif kind == "wild":
                r.append(rng.uniform(-float(h), 2 * float(h)))
            else:
                r.append(rng.choice([0.1 * float(h), 0.9 * float(h), f, float(h)]))
        out.append(r)
    return kind, out


def crosscheck_anticipation(cases: int, seed: int = 0) -> dict:
    from surgflow.data.targets import anticipation_targets
    from surgflow.evaluation import score

    params = inspect.signature(score.score_anticipation).parameters
    new_api = "wmae" in params
    has_dtype = "dtype" in inspect.signature(anticipation_targets).parameters
    rng = random.Random(seed)
    counts = {"cases": 0, "comparisons": 0, "matches": 0, "skipped_cases": 0, "mismatch_cases": 0}
    by_metric = {m: [0, 0] for m in ANTIC}
    examples = []
    for c in range(cases):
        fps, h, k, videos = _random_anticipation_case(rng)
        pooling = rng.choice(["frames", "frames", "videos"])
        clip = rng.random() < 0.3
        wmae = rng.choice(["per_instrument", "pitfalls_bn"])
        dtype = rng.choice(["float32", "float64"])  # eval path (float32) or score path (float64)
        if not new_api and (clip or wmae != "per_instrument"):
            counts["skipped_cases"] += 1
            continue
        tg = Target(fps, h)
        y_or = {v: [list(col) for col in zip(*[oracle_targets([p[i] for p in pres])
                                                for i in range(k)])] for v, pres in videos.items()}
        preds = {v: _random_predictions(rng, y_or[v], tg)[1] for v in videos}
        oracle = oracle_anticipation(y_or, preds, k, tg, pooling, clip, wmae)
        gts = {}
        for v, pres in videos.items():
            kw = {"dtype": np.float64} if (dtype == "float64" and has_dtype) else {}
            gts[v] = anticipation_targets(np.array(pres, bool), float(fps), float(h), **kw)
        pr = {v: np.array(preds[v], dtype=np.float64) for v in videos}
        inst = [f"i{i}" for i in range(k)]
        kwargs = dict(per_video=pooling == "videos")
        if new_api:
            kwargs.update(clip=clip, wmae=wmae)
        got = score.score_anticipation(gts, pr, inst, float(h), float(fps), **kwargs)
        tol = 1e-6 if gts[next(iter(gts))].dtype == np.float32 else 1e-9
        bad = []
        for m in ANTIC:
            pairs = [(got["instruments"][n].get(m, "absent"), oracle["instruments"][i][m])
                     for i, n in enumerate(inst)] + [(got["mean"].get(m, "absent"), oracle["mean"][m])]
            for a, b in pairs:
                if a == "absent":
                    continue
                counts["comparisons"] += 1
                by_metric[m][1] += 1
                if _close(a, b, tol):
                    counts["matches"] += 1
                    by_metric[m][0] += 1
                else:
                    bad.append((m, a, b))
        counts["cases"] += 1
        if bad:
            counts["mismatch_cases"] += 1
            if len(examples) < 5:
                examples.append({"case": c, "fps": float(fps), "h": float(h), "dtype": dtype,
                                 "pooling": pooling, "first": bad[0]})
    return {**counts, "by_metric": {m: f"{a}/{b}" for m, (a, b) in by_metric.items()},
            "examples": examples}


def crosscheck_phase(cases: int, seed: int = 1) -> dict:
    from surgflow.evaluation import score
    from surgflow.labels import CHOLEC80_PHASES

    rng = random.Random(seed)
    counts = {"cases": 0, "comparisons": 0, "matches": 0, "mismatch_cases": 0}
    examples = []
    for c in range(cases):
        gts, preds = {}, {}
        for vi in range(rng.randint(1, 4)):
            n = rng.randint(1, 80)
            g, cur = [], rng.randrange(7)
            for _ in range(n):
                if rng.random() < 0.08:
                    cur = rng.randrange(7)
                g.append(cur)
            g = [-1 if rng.random() < 0.03 else x for x in g]
            if all(x < 0 for x in g):
                g[0] = 0
            acc = rng.random()
            p = [x if (x >= 0 and rng.random() < acc) else rng.randrange(7) for x in g]
            gts[f"v{vi}"], preds[f"v{vi}"] = np.array(g), np.array(p)
        gt_only = rng.random() < 0.5
        oracle = oracle_phase(gts, preds, 7, gt_only)
        got = score.score_phase(gts, preds, CHOLEC80_PHASES, 1.0, gt_only=gt_only)
        pairs = []
        for m, (mu, sd) in oracle["video"].items():
            pairs += [(got["video"][m]["mean"], 100 * mu), (got["video"][m]["std"], 100 * sd)]
        for ci, name in enumerate(CHOLEC80_PHASES):
            pairs += [(got["per_phase"][name][m], 100 * oracle["per_phase"][ci][m]) for m in PHASE_CLASS]
        for m, (mu, sd) in oracle["per_phase_mean"].items():
            pairs += [(got["per_phase_mean"][m]["mean"], 100 * mu), (got["per_phase_mean"][m]["std"], 100 * sd)]
        pairs += [(got["frame"][m], 100 * oracle["frame"][m]) for m in oracle["frame"]]
        bad = [(a, b) for a, b in pairs if not _close(a, b, 1e-9)]
        counts["cases"] += 1
        counts["comparisons"] += len(pairs)
        counts["matches"] += len(pairs) - len(bad)
        if bad:
            counts["mismatch_cases"] += 1
            if len(examples) < 5:
                examples.append({"case": c, "first": bad[0]})
    return {**counts, "examples": examples}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print("anticipation:", crosscheck_anticipation(a.cases, a.seed))
    print("phase:", crosscheck_phase(a.cases, a.seed + 1))
