"""`surgflow experiment cheating`: reproduce the BN-pitfalls paper's "cheating" effect on the
built-in synthetic data (BN vs frozen BN vs BN-free, honest vs train-mode evaluation)."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

from surgflow.cli_args import add_device, resolve_device
from surgflow.io_utils import SurgflowError

EXPERIMENTS = ("cheating",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", choices=EXPERIMENTS,
                   help="which experiment: " + ", ".join(EXPERIMENTS))
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds, mean and std over them (default 5; 1 with --quick)")
    p.add_argument("--out", default="experiments/cheating",
                   help="output folder (data, runs, cheating.md, cheating.json, loss_curves.png)")
    p.add_argument("--quick", action="store_true",
                   help="tiny data and training (a smoke test, about a minute); numbers mean little")
    p.add_argument("--pretrained", default="", metavar="SOURCE",
                   help="start every variant from offline ImageNet weights (e.g. efficientnet_lite0: "
                        "backbone tf_efficientnet_lite0, frozen_bn keeps the ImageNet statistics)")
    p.add_argument("--workers", type=int, default=None,
                   help="trainings at a time, each in its own process (default: 1 on a GPU or "
                        "with --quick, else min(2, CPU cores)); on a GPU several share the device")
    add_device(p)


def run(args) -> int:
    from surgflow.experiments.cheating import run_cheating_experiment  # light: --help imports commands/

    t0 = time.perf_counter()
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 5)
    if args.workers is not None and args.workers < 1:
        raise SurgflowError(f"--workers must be >= 1, got {args.workers}")
    setup = None
    if args.pretrained:
        from surgflow.experiments.cheating import QUICK, CheatingSetup  # light: --help imports commands/
        from surgflow.experiments.cheating_report import PRETRAINED_LR  # light: --help imports commands/
        from surgflow.models.offline_weights import SOURCES  # heavy: torch

        if args.pretrained not in SOURCES:
            raise SurgflowError(f"--pretrained: unknown offline weights '{args.pretrained}'; known: "
                                f"{', '.join(SOURCES)}")
        setup = replace(QUICK if args.quick else CheatingSetup(), pretrained=args.pretrained,
                        backbone=SOURCES[args.pretrained].timm_name, lr=PRETRAINED_LR,
                        warmup_steps=0)  # measured without warmup (BENCHMARKS.md, issue 20)
    res = run_cheating_experiment(args.out, seeds=seeds, quick=args.quick, setup=setup,
                                  device=resolve_device(args.device), workers=args.workers)
    print(open(res["files"]["markdown"]).read())
    print(f"wrote {res['files']['markdown']}, {res['files']['json']}"
          + (f", {res['files']['plot']}" if res["files"]["plot"] else "")
          + f" in {time.perf_counter() - t0:.0f} s")
    return 0
