"""`surgflow synth OUT --videos N --seed S`: a synthetic surgery dataset in the Cholec80 layout."""
from __future__ import annotations

import argparse
import sys
import time

from surgflow.cli_args import format_size, parse_size, size_type
from surgflow.data import synth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (videos/, phase_annotations/, tool_annotations/)")
    parser.add_argument("--videos", type=int, default=12, help="number of videos")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--size", type=size_type(even=True, minimum=16), default="320x180",
                        metavar="WxH", help="frame size WIDTHxHEIGHT (even numbers)")
    parser.add_argument("--width", type=int, default=None, help="deprecated: use --size WxH")
    parser.add_argument("--height", type=int, default=None, help="deprecated: use --size WxH")
    parser.add_argument("--min-seconds", type=float, default=60.0, help="shortest video length")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="longest video length")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = one per CPU core)")

    parser.add_argument("--profile", choices=list(synth.PROFILES), default="clean",
                        help="variation independent of the labels (light, camera, smoke, instrument "
                             "looks, Cholec80-like phase durations, cross-fades): clean = none, "
                             "realistic ~ real laparoscopy, hard = more of everything; recorded "
                             "in OUT/synth.json")


def run(args) -> int:
    h, w = args.size
    if args.width is not None or args.height is not None:
        print("warning: --width/--height are deprecated; use --size WxH", file=sys.stderr)
        h, w = parse_size(f"{args.width or w}x{args.height or h}", even=True, minimum=16)
    t0 = time.time()
    paths = synth.synthesize(args.out, videos=args.videos, seed=args.seed, width=w, height=h,
                             min_seconds=args.min_seconds,
                             max_seconds=args.max_seconds, workers=args.workers or None,
                             profile=args.profile)
    print(f"wrote {len(paths)} synthetic videos ({format_size((h, w))}, 25 fps, profile "
          f"{args.profile}) with phase and tool annotations to {args.out} in {time.time() - t0:.1f} s")
    import shlex  # light: --help imports commands/

    print(f"next: surgflow prepare cholec80 {shlex.quote(str(args.out))} PREPARED_OUT")  # pasteable
    return 0
