"""`surgflow audit CONFIG_OR_RUN`: test a model for BatchNorm leakage of future or
cross-sample information (inventory, causality, batch coupling, train/eval discrepancy); for a
YAML config also the training input path (sampler, padding, augmentation, precision) on the
config's dataset (surgflow/training/input_audit.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from surgflow.cli_args import add_checkpoint, add_device, check_orientation, resolve_device, size_type
from surgflow.io_utils import SurgflowError, atomic_write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="CONFIG_OR_RUN",
                   help="a preset name or YAML config (the model is built with random weights: the leaks are "
                        "structural), a run directory, or a checkpoint .pt file")
    p.add_argument("--mode", choices=("train", "eval", "both"), default="both",
                   help="which modes to test: train (how the model is trained), eval (how it is "
                        "deployed), or both")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any leak is found (for CI)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for a YAML config, e.g. --set model.norm=frozen_bn")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="prepared dataset for the input-path audit (sampler, padding, "
                        "augmentation) instead of the config's or run's data.root, e.g. after "
                        "the data moved")
    p.add_argument("--size", type=size_type(), default=None, metavar="WxH",
                   help="frame size WIDTHxHEIGHT of the random test input (default: the model's "
                        "size scaled down to a 64-pixel short side)")
    p.add_argument("--batch", type=int, default=2, help="sequences per test batch (>= 2)")
    p.add_argument("--frames", type=int, default=8, help="frames per test sequence (>= 2)")
    add_checkpoint(p)
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random test input")
    p.add_argument("--input-draws", type=int, default=8, metavar="N",
                   help="augmentation draws per input-path test (a YAML config in train mode)")


def _input_path_findings(cfg, args) -> list:
    """The training input path on the config's dataset; a NOTE (not a leak) when it cannot run."""
    from surgflow.audit.audit import Finding  # heavy: torch
    from surgflow.training.input_audit import audit_input_path  # heavy: torch, timm

    if args.input_draws < 1:
        raise SurgflowError("--input-draws must be >= 1")
    try:
        return audit_input_path(cfg, draws=args.input_draws, seed=args.seed)
    except SurgflowError as e:
        return [Finding("input_path", "train", float("nan"), float("nan"), False,
                        f"input path NOT audited: {e}", fix="give the config a prepared dataset "
                        "(--set data.root=DIR) to audit sampler, padding and augmentation")]


def run(args) -> int:
    from surgflow.audit.audit import audit_model, default_input_shape  # heavy: torch
    from surgflow.audit.targets import load_target  # light: --help imports commands/

    if args.batch < 2 or args.frames < 2:
        raise SurgflowError("--batch and --frames must be >= 2 (batch coupling and causality tests)")
    overrides = list(args.overrides)
    if args.data_root is not None:
        if Path(args.target).is_dir() or Path(args.target).suffix == ".pt":
            raise SurgflowError(f"--data-root: the input-path audit builds the training path from a "
                                f"config; pass the run's config with it: surgflow audit "
                                f"{Path(args.target) / 'config.yaml' if Path(args.target).is_dir() else 'RUN/config.yaml'} "
                                f"--data-root {args.data_root}")
        if not (Path(args.data_root) / "manifest.json").is_file():
            raise SurgflowError(f"--data-root {args.data_root}: no manifest.json there; pass the "
                                "folder surgflow prepare wrote")
        overrides.append(f"data.root={Path(args.data_root).resolve()}")
    model, source, cfg = load_target(args.target, overrides, args.checkpoint, with_config=True)
    model = model.to(resolve_device(args.device))
    shape = default_input_shape(model, args.batch, args.frames)
    if args.size is not None:
        check_orientation(args.size, getattr(model, "preprocess", {}).get("size"))
        shape = (args.batch, args.frames, 3, *args.size)
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    report = audit_model(model, input_shape=shape, modes=modes, seed=args.seed)
    if cfg is not None and "train" in modes:
        report.findings += _input_path_findings(cfg, args)
    print(f"source: {source}")
    print(report.format())
    if args.json:
        d = report.to_dict()
        d["source"] = source
        atomic_write_json(args.json, d)
        print(f"wrote {args.json}")
    return 1 if (args.strict and report.leaks) else 0
