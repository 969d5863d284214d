"""`surgflow audit CONFIG_OR_RUN`: test a model for BatchNorm leakage of future or
cross-sample information (inventory, causality, batch coupling, train/eval discrepancy)."""
from __future__ import annotations

import argparse

from surgflow.cli_args import add_checkpoint, add_device, check_orientation, resolve_device, size_type


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
    p.add_argument("--size", type=size_type(), default=None, metavar="WxH",
                   help="frame size WIDTHxHEIGHT of the random test input (default: the model's "
                        "size scaled down to a 64-pixel short side)")
    p.add_argument("--batch", type=int, default=2, help="sequences per test batch (>= 2)")
    p.add_argument("--frames", type=int, default=8, help="frames per test sequence (>= 2)")
    add_checkpoint(p)
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random test input")


def load_target(target: str, overrides: list[str], which: str = "best"):
    """(model, description) from a YAML config, a run directory or a checkpoint file."""
    from pathlib import Path

    from surgflow.io_utils import SurgflowError

    path = Path(target)
    if not path.exists():
        from surgflow.config import ConfigError, resolve_config_path

        try:
            path = resolve_config_path(target)  # a preset name
        except ConfigError:
            raise SurgflowError(f"{target} does not exist; pass a YAML config or preset name (see "
                                "`surgflow configs`), a run directory written by `surgflow train`, "
                                "or a checkpoint .pt file") from None
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        from surgflow.config import load_config
        from surgflow.models.model import build_model

        from surgflow.models.heads import HEADS

        cfg = load_config(path, overrides)
        cfg.model.pretrained = False  # random weights: the leaks tested are structural
        note = ""
        if cfg.task.online and cfg.model.head in HEADS and not HEADS.get(cfg.model.head).causal:
            # build_model refuses this combination; build it offline to show why
            cfg.task.online = False
            note = (f" (head '{cfg.model.head}' is not causal: training refuses it with "
                    "task.online: true; audited as built with task.online: false)")
        model = build_model(cfg, num_phases=7, num_tools=7,
                            num_instruments=len(cfg.task.instruments))
        return model.eval(), f"config {path}{note}"
    if overrides:
        raise SurgflowError("--set applies to a YAML config only; a checkpoint is audited with "
                            "the config it was trained with")
    from surgflow.runs import load_model

    try:
        model, cfg, meta = load_model(path, which=which, device="cpu")
    except SurgflowError:
        raise
    except Exception as e:  # a checkpoint from another program or version
        raise SurgflowError(
            f"{path}: cannot rebuild a model from this checkpoint ({type(e).__name__}: {e}); pass "
            "a run directory or checkpoint written by `surgflow train`, or the YAML config the "
            "model was trained with (the audit works with random weights)") from e
    return model, f"checkpoint {path}"


def run(args) -> int:
    from surgflow.audit.audit import audit_model, default_input_shape
    from surgflow.io_utils import SurgflowError, atomic_write_json

    if args.batch < 2 or args.frames < 2:
        raise SurgflowError("--batch and --frames must be >= 2 (batch coupling and causality tests)")
    model, source = load_target(args.target, args.overrides, args.checkpoint)
    model = model.to(resolve_device(args.device))
    shape = default_input_shape(model, args.batch, args.frames)
    if args.size is not None:
        check_orientation(args.size, getattr(model, "preprocess", {}).get("size"))
        shape = (args.batch, args.frames, 3, *args.size)
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    report = audit_model(model, input_shape=shape, modes=modes, seed=args.seed)
    print(f"source: {source}")
    print(report.format())
    if args.json:
        d = report.to_dict()
        d["source"] = source
        atomic_write_json(args.json, d)
        print(f"wrote {args.json}")
    return 1 if (args.strict and report.leaks) else 0
