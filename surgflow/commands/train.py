"""`surgflow train CONFIG [key=value ...] [--set key=value ...] [--out RUN_DIR] [--resume]`.

CONFIG is a preset name (`surgflow configs` lists them) or a YAML file."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from surgflow.io_utils import SurgflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG",
                        help="a preset name (see `surgflow configs`), a YAML file, or a run's "
                             "config.yaml; bare key=value arguments after it are overrides too, "
                             "e.g. `surgflow train synthetic_phase_tiny train.epochs=2`")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=1e-4 (repeatable)")
    parser.add_argument("--out", default=None, metavar="RUN_DIR",
                        help="run directory (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from RUN_DIR/checkpoints/last.pt")
    parser.add_argument("--allow-data-change", action="store_true",
                        help="with --resume: accept a different data.root, frame size, label set or "
                        "videos (manifest checksums) than the run was trained on (refused otherwise)")


def run(args) -> int:
    import shlex  # light: --help imports commands/

    from surgflow.config import load_config  # light: --help imports commands/
    from surgflow.training.trainer import train  # heavy: torch, timm

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    print(f"run directory: {out}")
    if args.allow_data_change and not args.resume:
        raise SurgflowError("--allow-data-change applies to --resume only")
    res = train(cfg, out, resume=args.resume, allow_data_change=args.allow_data_change)
    best = res["best_metric"]
    print(f"stopped: {res['stopped']} after {res['step']} steps (epoch {res['epoch']})")
    for k, v in {**{f"train/{k}": v for k, v in res["train"].items()}, **res["val"]}.items():
        print(f"  {k:<18} {v:.4f}")
    if best.get("value") is not None:
        window = cfg.train.best_window
        mean = f" (mean of {window} validations up to it)" if window > 1 else ""
        print(f"best {best['metric']} = {best['value']:.4f}{mean} (epoch {best['epoch']}, step "
              f"{best['step']})" + (", EMA weights" if cfg.train.ema_decay else ""))
    # best.pt does not exist before the first validation (e.g. a signal stop early in epoch 1)
    print("checkpoints: " + "  ".join(str(p) for p in (res["last"], res["best"]) if Path(p).is_file()))
    if Path(res[cfg.train.keep]).is_file():
        print(f"kept (eval, predict, export and audit read it by default): {res[cfg.train.keep]} "
              f"(train.keep={cfg.train.keep})")
    if res["stopped"] in ("SIGTERM", "SIGINT"):  # a clean stop, but not the end of training
        print(f"next: surgflow train {shlex.quote(str(out / 'config.yaml'))} --out "
              f"{shlex.quote(str(out))} --resume")
        return 128 + int(signal.Signals[res["stopped"]])
    print(f"next: surgflow eval {shlex.quote(str(out))}")  # copy-pasteable with spaces in the path
    return 0
