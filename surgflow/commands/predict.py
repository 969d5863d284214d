"""`surgflow predict CHECKPOINT VIDEO_OR_STREAM`: online prediction, one frame at a time."""
from __future__ import annotations

import argparse
import sys

from surgflow.cli_args import add_checkpoint, add_device, resolve_device
from surgflow.io_utils import SurgflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                        help="run directory or checkpoint file (.pt) of a causal model")
    parser.add_argument("video", metavar="VIDEO", help="video file, or any stream PyAV/ffmpeg opens (rtsp://, http://, ...)")
    parser.add_argument("--fps", type=float, default=None,
                        help="sampling rate in frames per second; None = the model's (e.g. 1)")
    parser.add_argument("--out", default="predictions",
                        help="folder for <video>-phase.txt / -tool.txt / -anticipation.txt")
    parser.add_argument("--render", default=None, metavar="OVERLAY.mp4",
                        help="also write the video with the prediction overlay (time as mm:ss, "
                             "phase ribbon, colour legend, remaining-time bars)")
    parser.add_argument("--render-at", choices=("source", "sampling"), default="source",
                        help="overlay frame rate: source = every decoded frame, the prediction "
                             "held between samples (plays like the video); sampling = one frame "
                             "per prediction (a slideshow at --fps)")
    parser.add_argument("--gt", default=None, metavar="PHASE_FILE",
                        help="a ground-truth phase file (`Frame<TAB>Phase`, e.g. Cholec80's "
                             "videoXX-phase.txt) drawn as a second ribbon under the predictions")
    parser.add_argument("--gt-fps", type=float, default=None, metavar="RATE",
                        help="rows per second of --gt (default: the video's frame rate, as "
                             "Cholec80's 25-fps phase files; 1 for files written by eval)")
    add_checkpoint(parser)
    parser.add_argument("--name", default=None, help="video name in the output files; None = the file stem")
    add_device(parser)
    parser.add_argument("--raw-frames", action="store_true",
                        help="feed decoded frames directly, skipping the JPEG round trip that makes "
                        "them identical to a prepared dataset's frames (and predict == eval)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")


def run(args) -> int:
    from surgflow.online.predict import predict_video  # light: --help imports commands/
    from surgflow.online.predictor import OnlinePredictor  # heavy: torch

    if args.gt and not args.render:
        raise SurgflowError("--gt draws a ground-truth ribbon on the overlay: add --render OVERLAY.mp4")
    predictor = OnlinePredictor.from_checkpoint(args.run, which=args.checkpoint,
                                                device=resolve_device(args.device))
    summary = predict_video(predictor, args.video, args.out, fps=args.fps, render=args.render,
                            name=args.name, max_frames=args.max_frames,
                            match_store=not args.raw_frames, render_at=args.render_at,
                            gt=args.gt, gt_fps=args.gt_fps)
    lat = summary["latency_ms"]
    print(f"{summary['video']}: {summary['frames']} frames at {args.fps or predictor.fps:g} fps, "
          f"model latency {lat['mean']:.1f} ms/frame (p50 {lat['p50']:.1f}, max {lat['max']:.1f})")
    for path in summary["files"]:
        print(f"wrote {path}")
    if summary["render"]:
        print(f"wrote {summary['render']}")
    if summary["stopped"]:
        print(f"warning: {summary['stopped']}; the {summary['frames']} predictions made so far were "
              "written", file=sys.stderr)
        return 1
    return 0
