"""Convergence of the tiny synthetic presets: N seeds, test score, wall time, late-epoch stability.

For a preset, synthesize a dataset (fixed data seed), prepare it at 1 fps and the preset's size
(phase: realistic profile at 160x96, anticipation: clean at 112x64; WxH, as its YAML comment says), then
train the preset once per training seed, one after another, and evaluate each best checkpoint on the
test videos of the preset's split with the real evaluator (`surgflow eval`'s code path).

Targets (issue 9), for each seed:
- phase: test accuracy >= 85 (video-wise mean), train wall <= 600 s on a 2-core CPU, and no swing of
  more than 15 points between consecutive validation epochs in the last third of training;
- anticipation: test wMAE below half of the better trivial baseline (constant h = "never within the
  horizon", or the per-instrument train mean), same wall limit, and no swing of more than 0.15 h
  between consecutive validation epochs in the last third.

    python benchmarks/bench_presets.py phase            # 25 videos of 90-180 s, 3 seeds
    python benchmarks/bench_presets.py anticipation     # 25 videos of 240-360 s, 3 seeds
    python benchmarks/bench_presets.py phase --seeds 1 --work /tmp/bp
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# preset key -> (preset name, synthetic videos, min s, max s, synth profile, prepared (H, W))
PRESETS = {"phase": ("synthetic_phase_tiny", 25, 90, 180, "realistic", (96, 160)),
           "anticipation": ("synthetic_anticipation_tiny", 25, 240, 360, "clean", (64, 112))}
WALL_LIMIT_S = 600.0


def late_swing(metrics_csv: Path, key: str) -> tuple[list[float], float]:
    """Validation values per epoch and the largest change between consecutive epochs in the
    last third of training (the last third's epochs and the one before them)."""
    with open(metrics_csv, newline="") as f:
        vals = [float(r[key]) for r in csv.DictReader(f) if r.get(key)]
    tail = vals[len(vals) - len(vals) // 3 - 1:]
    return vals, max((abs(a - b) for a, b in zip(tail, tail[1:])), default=0.0)


def anticipation_baselines(root: Path, split: dict, horizon: float, instruments: list[str]) -> dict:
    """wMAE (minutes) on the test videos of the predictions that read no frames."""
    from surgflow.data.store import PreparedDataset
    from surgflow.evaluation.score import anticipation_baselines as score_baselines

    ds = PreparedDataset(root)
    gt = {v: ds.anticipation(v, horizon, instruments) for v in split["train"] + split["test"]}
    names = {"constant_h": "constant h", "train_mean": "train mean"}
    return {names[k]: m["wMAE"] for k, m in
            score_baselines(gt, split["train"], split["test"], instruments, horizon).items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", choices=sorted(PRESETS))
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    p.add_argument("--seed-list", default="", help="comma-separated seeds instead (e.g. 0,2)")
    p.add_argument("--work", default="bench_presets_work", help="data and runs (reused if present)")
    p.add_argument("--set", action="append", default=[], help="extra dotted override for the preset")
    args = p.parse_args(argv)

    import torch

    from surgflow import api
    from surgflow.data.prepare import prepare_dataset
    from surgflow.data.splits import resolve_split
    from surgflow.data.store import PreparedDataset
    from surgflow.data.synth import synthesize

    preset, n_videos, lo, hi, profile, size = PRESETS[args.task]
    work = Path(args.work) / args.task
    raw, root = work / "raw", work / "prepared"
    made = raw / "synth.json"
    if made.is_file() and json.loads(made.read_text()).get("profile", {}).get("name") != profile:
        raise SystemExit(f"{raw} was synthesized with another profile than '{profile}' "
                         f"({made}); delete {work} or pass another --work")
    if not (raw / "videos").is_dir() or len(list((raw / "videos").glob("*.mp4"))) != n_videos:
        synthesize(raw, videos=n_videos, seed=0, min_seconds=lo, max_seconds=hi, profile=profile)
    if not (root / "manifest.json").is_file():
        prepare_dataset("cholec80", raw, root, fps=1.0, size=size)
    cfg = api.load_config(preset, [f"data.root={root}", *args.set])
    split = resolve_split(cfg.data.split, PreparedDataset(root).videos)
    metric = "phase" if args.task == "phase" else "anticipation"
    h = float(cfg.task.horizon)
    base = anticipation_baselines(root, split, h, list(cfg.task.instruments)) if metric != "phase" else {}

    rows = []
    seeds = [int(x) for x in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
    for seed in seeds:
        run = work / f"run_seed{seed}"
        t0 = time.perf_counter()
        api.train(preset, run, overrides=[f"data.root={root}", f"train.seed={seed}", *args.set],
                  resume=(run / "checkpoints" / "last.pt").exists())
        wall = time.perf_counter() - t0
        ev = api.evaluate(run, split="test", checkpoint="kept", out=run / "eval", plots=False, quiet=True)
        if metric == "phase":
            score = ev["phase"]["video"]["accuracy"]["mean"]
            vals, swing = late_swing(run / "metrics.csv", "val/accuracy")
            vals, swing = [100 * v for v in vals], 100 * swing
            ok = score >= 85 and swing <= 15 and wall <= WALL_LIMIT_S
        else:
            score = ev["anticipation"]["mean"]["wMAE"]
            vals, swing = late_swing(run / "metrics.csv", "val/wMAE")
            ok = score <= 0.5 * min(base.values()) and swing <= 0.15 * h and wall <= WALL_LIMIT_S
        rows.append((seed, score, wall, swing, vals, ok))
        print(f"seed {seed}: test {score:.3f}, train wall {wall:.0f} s, late swing {swing:.2f}", flush=True)

    name = "accuracy (video-wise, %)" if metric == "phase" else "wMAE (min)"
    print(f"\n# {preset} on {n_videos} synthetic videos of {lo}-{hi} s ({len(split['train'])}/"
          f"{len(split['val'])}/{len(split['test'])} train/val/test), torch threads "
          f"{torch.get_num_threads()}, cpu_count {os.cpu_count()}")
    if base:
        print("baselines (test wMAE, min): " + ", ".join(f"{k} {v:.3f}" for k, v in base.items()))
    print(f"| seed | test {name} | train wall (s) | largest late val swing | val per epoch | target |")
    print("|---|---|---|---|---|---|")
    for seed, score, wall, swing, vals, ok in rows:
        print(f"| {seed} | {score:.3f} | {wall:.0f} | {swing:.2f} | {' '.join(f'{v:.2f}' for v in vals)} "
              f"| {'PASS' if ok else 'FAIL'} |")
    scores = [r[1] for r in rows]
    spread = statistics.stdev(scores) if len(scores) > 1 else float("nan")
    print(f"| mean +- std over seeds | {statistics.mean(scores):.3f} +- {spread:.3f} | "
          f"{statistics.mean(r[2] for r in rows):.0f} | | | |")
    return 0 if all(r[5] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
