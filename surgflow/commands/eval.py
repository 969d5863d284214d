"""`surgflow eval RUN_DIR`: run a trained model causally over whole videos and score it."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (or a checkpoint file)")
    parser.add_argument("--split", default="test", choices=["val", "test", "train"],
                        help="subset of the run's split to evaluate")
    parser.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint path")
    parser.add_argument("--cheat", action="store_true",
                        help="BatchNorm in train mode (batch statistics over future frames): the "
                             "paper's NON-CAUSAL 'cheating' evaluation; every output is marked")
    parser.add_argument("--out", default=None, help="output directory (default RUN_DIR/eval_<split>)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--chunk", type=int, default=None,
                        help="frames per forward pass (default: the run's train.seq_len)")
    parser.add_argument("--relaxed", choices=["published", "corrected"], default=None,
                        help="also report relaxed-boundary phase metrics (labelled variant)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args) -> int:
    from surgflow.evaluation.runner import evaluate_run

    evaluate_run(args.run_dir, split=args.split, checkpoint=args.checkpoint, cheat=args.cheat,
                 out=args.out, device=args.device, chunk=args.chunk, relaxed=args.relaxed,
                 plots=not args.no_plots)
    return 0
