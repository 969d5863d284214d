"""`surgflow score phase|tools|anticipation`: score prediction files of any method against ground
truth with stated protocols (terminal table, JSON with a `protocol` block, optional plots)."""
from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="directory of prediction files, one per video")
    p.add_argument("--gt-fps", type=float, default=25.0,
                   help="rate of the ground-truth rows (Cholec80 phase files: 25; use the --fps "
                        "value for files already at the evaluation rate, e.g. written by eval)")
    p.add_argument("--fps", type=float, default=1.0, help="evaluation fps (one prediction row per frame)")
    p.add_argument("--truncate", action="store_true",
                   help="score the common prefix when ground truth and prediction lengths differ "
                        "(reported); default: error")
    p.add_argument("--json", metavar="FILE", help="write the numbers and protocol as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots to DIR")
    p.add_argument("--label", default=None,
                   help="a name (e.g. the split) shown on every printed line and in the JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="score_task", metavar="TASK", required=True)
    ph = sub.add_parser("phase", help="phase recognition: video-wise, per-phase, frame-pooled, "
                                      "segment and (on request) relaxed metrics",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ph.add_argument("--gt", required=True, help="ground-truth directory (<video>-phase.txt files or "
                                                "the Cholec80 root with phase_annotations/)")
    _common(ph)
    ph.add_argument("--relaxed", choices=["published", "corrected"], default=None,
                    help="also report relaxed-boundary metrics (published = the Cholec80 MATLAB "
                         "script with its bugs; corrected = intended windows, video-wise)")
    ph.add_argument("--gt-only", action="store_true",
                    help="macro mean over ground-truth phases only (default: ground truth union "
                         "prediction)")
    ph.add_argument("--phases", default="cholec80",
                    help="phase vocabulary: cholec80, autolaparo, or a mapping file ('id name' lines)")

    tl = sub.add_parser("tools", help="tool presence: AP per tool and mAP (frame-pooled)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tl.add_argument("--gt", required=True, help="tool annotation directory (<video>-tool.txt)")
    _common(tl)

    an = sub.add_parser("anticipation", help="instrument anticipation: inMAE ... mMAE (minutes)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    an.add_argument("--tools", required=True,
                    help="tool annotation directory; the ground truth is built from it for --horizon")
    _common(an)
    an.add_argument("--horizon", type=float, required=True, help="horizon h in minutes (3 or 5)")
    an.add_argument("--instruments", default=None,
                    help="comma-separated instruments (default: Bipolar,Scissors,Clipper,Irrigator,"
                         "SpecimenBag)")
    an.add_argument("--per-video", action="store_true",
                    help="pool per video then average (default: all frames pooled per instrument)")


def phase_vocabulary(spec: str) -> list[str]:
    from surgflow import labels

    key = spec.lower()
    if key == "cholec80":
        return list(labels.CHOLEC80_PHASES)
    if key == "autolaparo":
        return list(labels.AUTOLAPARO_PHASES)
    from pathlib import Path

    from surgflow.data.annotations import parse_mapping
    from surgflow.io_utils import SurgflowError

    if not Path(spec).is_file():
        raise SurgflowError(f"--phases {spec!r}: not cholec80, autolaparo or an existing mapping file")
    return parse_mapping(spec)


def run(args) -> int:
    from surgflow.evaluation import files, plots, score

    notes: list[str] = []
    written: list = []
    if args.score_task == "phase":
        names = phase_vocabulary(args.phases)
        gts, preds = files.load_phase_dirs(args.gt, args.pred, names, args.gt_fps, args.fps,
                                           args.truncate, notes)
        result = score.score_phase(gts, preds, names, args.fps, relaxed=args.relaxed,
                                   gt_only=args.gt_only, label=args.label, notes=notes)
        if args.plots:
            import numpy as np

            written = plots.phase_ribbons(gts, preds, names, args.plots, args.fps, args.label)
            written.append(plots.confusion_matrix_plot(np.array(result["confusion"]), names,
                                                       f"{args.plots}/confusion.png", args.label))
    elif args.score_task == "tools":
        gts, preds, names = files.load_tool_dirs(args.gt, args.pred, None, args.gt_fps, args.fps,
                                                 args.truncate, notes)
        result = score.score_tools(gts, preds, names, args.fps, label=args.label, notes=notes)
    else:
        from surgflow.labels import ANTICIPATION_INSTRUMENTS

        inst = ([s.strip() for s in args.instruments.split(",") if s.strip()]
                if args.instruments else list(ANTICIPATION_INSTRUMENTS))
        gts, preds = files.load_anticipation_dirs(args.tools, args.pred, inst, args.horizon,
                                                  args.gt_fps, args.fps, args.truncate, notes)
        result = score.score_anticipation(gts, preds, inst, args.horizon, args.fps,
                                          per_video=args.per_video, label=args.label, notes=notes)
        if args.plots:
            written = plots.anticipation_curves(gts, preds, inst, args.horizon, args.plots,
                                                args.fps, args.label)
    print(score.format_table(result))
    if written:
        print(f"wrote {len(written)} plots to {args.plots}")
    if args.json:
        score.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
