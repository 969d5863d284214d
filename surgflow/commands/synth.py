"""`surgflow synth OUT --videos N --seed S`: a synthetic surgery dataset in the Cholec80 layout."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (videos/, phase_annotations/, tool_annotations/)")
    parser.add_argument("--videos", type=int, default=12, help="number of videos")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--width", type=int, default=320, help="frame width (even)")
    parser.add_argument("--height", type=int, default=180, help="frame height (even)")
    parser.add_argument("--min-seconds", type=float, default=60.0, help="shortest video length")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="longest video length")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = one per CPU core)")


def run(args) -> int:
    import time

    from surgflow.data.synth import synthesize

    t0 = time.time()
    paths = synthesize(args.out, videos=args.videos, seed=args.seed, width=args.width,
                       height=args.height, min_seconds=args.min_seconds,
                       max_seconds=args.max_seconds, workers=args.workers or None)
    print(f"wrote {len(paths)} synthetic videos ({args.width}x{args.height}, 25 fps) with phase and "
          f"tool annotations to {args.out} in {time.time() - t0:.1f} s")
    print(f"next: surgflow prepare cholec80 {args.out} <prepared_out>")
    return 0
