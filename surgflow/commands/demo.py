"""`surgflow demo`: the main job on built-in synthetic data."""
from __future__ import annotations

from dataclasses import replace

from surgflow.data.synth import PROFILES


def add_arguments(p) -> None:
    p.add_argument("--out", default="surgflow_demo", metavar="DIR", help="output directory (new or from an earlier demo)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (under a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the first training run")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="training seeds per model (default 3; 2 with --quick)")
    p.add_argument("--profile", default=None, choices=sorted(PROFILES),
                   help="appearance variation of the synthetic videos (default realistic: per-video "
                        "lighting, white balance, camera motion, smoke, unequal phases)")


def run(args) -> int:
    from surgflow.experiments.demo import FULL, QUICK, run_demo  # light: --help imports commands/

    settings = None
    if args.profile:
        settings = replace(QUICK if args.quick else FULL, profile=args.profile)
    run_demo(args.out, quick=args.quick, seed=args.seed, seeds=args.seeds, settings=settings)
    return 0
