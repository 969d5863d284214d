"""`surgflow eval RUN_DIR`: run a trained model causally over whole videos and score it."""
from __future__ import annotations

import argparse

from surgflow.cli_args import add_checkpoint, add_device, resolve_device
from surgflow.io_utils import SurgflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_OR_CHECKPOINT",
                        help="run directory written by `surgflow train`, or a checkpoint .pt file")
    parser.add_argument("--split", default="test", choices=["val", "test", "train"],
                        help="subset of the run's split to evaluate")
    add_checkpoint(parser)
    parser.add_argument("--cheat", action="store_true",
                        help="BatchNorm in train mode (batch statistics over future frames): the "
                             "paper's NON-CAUSAL 'cheating' evaluation; every output is marked")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: RUN_DIR/eval_<split>)")
    add_device(parser)
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="prepared dataset to evaluate on (default: the one the run recorded; "
                        "use this when the data moved)")
    parser.add_argument("--chunk", type=int, default=None,
                        metavar="N",
                        help="frames per forward pass (default: the run's train.seq_len)")
    parser.add_argument("--relaxed", choices=["published", "corrected"], default=None,
                        help="also report relaxed-boundary phase metrics (labelled variant)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args) -> int:
    from surgflow.evaluation.runner import evaluate_run  # light: --help imports commands/

    if args.chunk is not None and args.chunk < 1:
        raise SurgflowError(f"--chunk {args.chunk}: must be >= 1 frame (leave it out to use the "
                            f"run's train.seq_len)")
    evaluate_run(args.run_dir, split=args.split, checkpoint=args.checkpoint, cheat=args.cheat,
                 out=args.out, device=resolve_device(args.device), chunk=args.chunk, relaxed=args.relaxed,
                 plots=not args.no_plots, data_root=args.data_root)
    return 0
