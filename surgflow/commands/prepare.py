"""`surgflow prepare LAYOUT RAW_ROOT OUT`: decode raw videos once into a prepared frame store."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from surgflow.cli_args import size_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("layout", metavar="LAYOUT", help="raw dataset layout: cholec80, autolaparo or mstcn")
    parser.add_argument("raw_root", metavar="RAW_ROOT", help="raw dataset folder (videos/ + annotation folders)")
    parser.add_argument("out", metavar="OUT", help="output folder of the prepared dataset (manifest.json + one "
                        "folder per video); re-running resumes")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second to keep")
    parser.add_argument("--size", type=size_type(even=True, minimum=8), default="384x216",
                        metavar="WxH", help="stored frame size WIDTHxHEIGHT (even numbers)")
    parser.add_argument("--workers", type=int, default=1, help="videos prepared in parallel "
                        "(processes)")
    parser.add_argument("--max-mismatch", type=int, default=5,
                        help="tolerated difference between decoded frames and annotation rows, in "
                        "source frames (a missing last 1-fps tool row is always within it when > 0)")
    parser.add_argument("--videos", nargs="*", default=None, metavar="NAME",
                        help="only these video names (default: every video of the layout)")
    parser.add_argument("--check", action="store_true", help="verify an already prepared OUT "
                        "instead of preparing: every video complete (frame counts, checksums, none "
                        "failed), and every raw video of RAW_ROOT prepared from unchanged sources")
    parser.add_argument("--full-hash", action="store_true",
                        help="decide whether a raw video changed by its whole-file sha256 (reads "
                        "every byte; with --check: verify, without: redo what differs) instead of "
                        "size, mtime and first/last MiB, which miss a same-size change in the "
                        "middle whose mtime was restored (`cp -p`, `rsync -a`)")


def run(args) -> int:
    from surgflow.data.prepare import check, format_failures, prepare, print_summary  # light: --help imports commands/

    out = Path(args.out)
    if args.check:
        problems = check(out, args.layout, args.raw_root, full_hash=args.full_hash)
        flag = " --full-hash" if args.full_hash else ""
        if problems:
            print(f"{out}: {len(problems)} problem(s):", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            print(f"fix: re-run `surgflow prepare {args.layout} {args.raw_root} {out}{flag}` (it "
                  f"redoes exactly these videos; a changed raw video that is corrupt needs a good "
                  f"copy first)", file=sys.stderr)
            return 1
        how = "whole-file sha256" if args.full_hash else "size, mtime and first/last MiB"
        print(f"{out}: OK (every video of {args.raw_root} prepared from unchanged sources, "
              f"compared by {how}; frame counts and checksums match)")
        return 0
    size = args.size  # (H, W)
    t0 = time.time()
    res = prepare(args.layout, args.raw_root, out, fps=args.fps, size=size, workers=args.workers,
                  max_mismatch=args.max_mismatch, videos=args.videos, full_hash=args.full_hash)
    print_summary(res, out)
    for name in res.done:
        e = res.manifest["videos"][name]
        print(f"  {name}: {e['frames']} frames from {e['decoded_frames']} decoded; {e['alignment']}")
        for note in e.get("notes", []):
            print(f"  {name}: {note}")
    print(f"time: {time.time() - t0:.1f} s")
    if res.failed:
        print(f"surgflow prepare: {len(res.failed)} video(s) failed (the others are prepared; "
              f"fix these and re-run the same command to resume):", file=sys.stderr)
        print(format_failures(res.failed, res.manifest), file=sys.stderr)
        return 1
    return 0
