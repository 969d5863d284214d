"""Would a causal phase-order prior help the phase preset? (issue 20; DOMAIN.md section 8: SV-RCNet's
prior-knowledge inference). Measured offline on saved evaluations, no training:

    python benchmarks/phase_order_filter.py RUN [RUN ...]

Each RUN is a training run with `eval_test_best/` (`surgflow eval RUN --split test` writes the
per-frame phase probabilities there). The filter is the forward pass of an HMM whose transition
matrix is counted from the run's training labels at the dataset's frame rate (so it learns which
phase follows which, and how long phases last), with `eps` of each row's mass spread over all
transitions (recovery from a wrong switch) and the network's probabilities raised to `lam` as
emissions: b_t ∝ (b_{t-1} A) * p_t^lam, prediction argmax b_t. Causal: frame t reads frames <= t.
Prints the video-wise test accuracy per run, raw and filtered, and the paired difference over runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = [(eps, lam) for eps in (1e-3, 1e-2, 1e-1) for lam in (0.5, 1.0, 2.0, 4.0)]


def transition_counts(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) frame-to-frame transition counts and (K,) first-phase counts of the training videos
    of a run's `data` config (its root, split and training subset)."""
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(data["root"], split=data["split"], subset=data["train_subset"])
    k = len(ds.phase_names)
    counts, first = np.zeros((k, k)), np.zeros(k)
    for v in ds.videos:
        y = ds.phase(v)
        first[y[0]] += 1
        np.add.at(counts, (y[:-1], y[1:]), 1)
    return counts, first


def forward_filter(probs: np.ndarray, counts: np.ndarray, first: np.ndarray, eps: float,
                   lam: float) -> np.ndarray:
    """probs (T, K) -> (T,) labels, each from frames <= t only."""
    a = counts + eps * counts.sum(1, keepdims=True).clip(min=1)  # (K, K) rows: from phase
    a /= a.sum(1, keepdims=True)
    pi = first + eps * first.sum()
    belief = pi / pi.sum() * probs[0] ** lam
    out = np.empty(len(probs), int)
    for t in range(len(probs)):
        if t:
            belief = (belief @ a) * probs[t] ** lam  # (K,)
        belief /= belief.sum()
        out[t] = belief.argmax()
    return out


def run_accuracies(run: Path) -> dict:
    """{"raw": acc, (eps, lam): acc}: video-wise mean test accuracy (%) of one run."""
    from surgflow.data.annotations import parse_mapping
    from surgflow.evaluation.files import read_phase_pred, read_table

    ev = run / "eval_test_best"
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    counts, first = transition_counts(data)
    names = parse_mapping(ev / "ground_truth" / "mapping.txt")
    per: dict = {}
    for pf in sorted((ev / "predictions").glob("*-phase_prob.txt")):
        video = pf.name[:-len("-phase_prob.txt")]
        probs = read_table(pf, names, "phase probabilities")[1]  # (T, K)
        gt = read_phase_pred(ev / "ground_truth" / f"{video}-phase.txt", names)  # (T,)
        n = min(len(gt), len(probs))
        per.setdefault("raw", []).append(100 * (probs[:n].argmax(1) == gt[:n]).mean())
        for eps, lam in SETTINGS:
            pred = forward_filter(probs[:n], counts, first, eps, lam)
            per.setdefault((eps, lam), []).append(100 * (pred == gt[:n]).mean())
    return {k: float(np.mean(v)) for k, v in per.items()}


def main(argv=None) -> None:
    from surgflow.experiments.report import paired_difference

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args(argv)
    accs = {run.name: run_accuracies(run) for run in args.runs}
    print("| run | raw | " + " | ".join(f"eps {e:g}, lam {lam:g}" for e, lam in SETTINGS) + " |")
    print("|---|---|" + "---|" * len(SETTINGS))
    for name, a in accs.items():
        print(f"| {name} | {a['raw']:.2f} | " + " | ".join(f"{a[s]:.2f}" for s in SETTINGS) + " |")
    raw = [a["raw"] for a in accs.values()]
    cells = []
    for s in SETTINGS:
        d = paired_difference([a[s] for a in accs.values()], raw)
        cells.append(f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d["n"] >= 2
                     else f"{d['mean']:+.2f}")
    print(f"| filtered - raw, 95% interval (n={len(raw)}) | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
