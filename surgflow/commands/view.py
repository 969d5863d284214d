"""`surgflow view RUN_OR_EVAL_DIR [B ...]`: an interactive HTML page of a split's predictions."""
from __future__ import annotations

import argparse

from surgflow.io_utils import SurgflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_EVAL_DIR",
                        help="evaluation folder written by `surgflow eval` (or a run folder: its "
                             "eval_<split>/); two or more are shown side by side on their common videos")
    parser.add_argument("--split", default="test", choices=["val", "test", "train"],
                        help="for a run folder: which eval_<split>/ to read")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder: index.html + frames/ (default: FIRST_EVAL_DIR/view)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="prepared dataset to take frames from (default: the one the "
                             "evaluation recorded; use this when the data moved)")
    parser.add_argument("--source", default=None, metavar="RAW_DIR",
                        help="take frames from the source videos in RAW_DIR (the raw dataset the "
                             "store was prepared from) instead of the prepared store")
    parser.add_argument("--frame-width", type=int, default=320, metavar="PIXELS",
                        help="width of the frame thumbnails (height follows; never upscaled)")
    parser.add_argument("--quality", type=int, default=70, metavar="Q",
                        help="JPEG quality of the thumbnails, 1..95")
    parser.add_argument("--names", default=None, metavar="A,B",
                        help="display names of the inputs, comma separated (default: run folder names)")


def run(args) -> int:
    from surgflow.evaluation.viewer import write_view  # light: --help imports commands/

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and len(names) != len(args.inputs):
        raise SurgflowError(f"--names {args.names}: {len(names)} name(s) for {len(args.inputs)} input(s)")
    write_view(args.inputs, out=args.out, split=args.split, data_root=args.data_root,
               source=args.source, frame_width=args.frame_width, quality=args.quality, names=names)
    return 0
