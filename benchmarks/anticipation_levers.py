"""One training lever on the cheating experiment's anticipation models, a few variants at a time
(issue 20): the experiment's defaults (`CheatingSetup`) with fields overridden, trained and scored
exactly as `surgflow experiment cheating` does, on the same data (data seed 0) and initial weights:

    python benchmarks/anticipation_levers.py OUT --seeds 0,1,2,3,4 --variants frozen_bn --set warmup_steps=232

Prints the frame-free baselines and one RESULT line per training (test wMAE in minutes and the
last epoch's training loss); a seed whose training loss stays near the train-mean predictor's
(about 0.37) has not fitted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_overrides(items: list[str]) -> dict:
    """["lr=3e-4", "warmup_steps=232"] -> {"lr": 3e-4, "warmup_steps": 232}, typed by CheatingSetup."""
    from surgflow.experiments.cheating import CheatingSetup

    types = {f.name: type(getattr(CheatingSetup(), f.name)) for f in fields(CheatingSetup)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types or types[key] not in (int, float, str, bool):
            raise SystemExit(f"--set {item}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(k for k, t in types.items() if t in (int, float, str, bool))}")
        out[key] = value.lower() in ("1", "true") if types[key] is bool else types[key](value)
    return out


def main(argv=None) -> None:
    from surgflow.experiments import report as rep
    from surgflow.experiments.cheating import CheatingSetup, _job, _prepare_data, trivial_baselines
    from surgflow.parallel import run_in_processes

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default="frozen_bn")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    s = replace(CheatingSetup(), **parse_overrides(args.set))
    prepared, split, train, test = _prepare_data(args.out, s)
    base = trivial_baselines(prepared, train, test, s.horizon)
    print("setup", json.dumps(asdict(s)), flush=True)
    print("baselines", json.dumps({k: round(m["wMAE"], 3) for k, m in base.items()}), flush=True)
    jobs = [(str(args.out), s, v, int(seed), str(prepared), str(split), "cpu", 1, True)
            for seed in args.seeds.split(",") for v in args.variants.split(",")]
    t0 = time.time()
    for r in run_in_processes(_job, jobs, workers=args.workers):
        evals = {k: round(e["wMAE"], 3) for k, e in r["evals"].items()}
        loss = rep.curve(Path(r["run_dir"]), "train/loss")
        print("RESULT", json.dumps({"seed": r["seed"], "variant": r["variant"], "wMAE": evals,
                                    "last_train_loss": round(loss[-1][1], 4) if loss else None,
                                    "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
