"""`surgflow score phase|tools|anticipation`: score prediction files of any method against ground
truth with stated protocols (terminal table, JSON with a `protocol` block, optional plots)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from surgflow import labels
from surgflow.cli_args import HelpFormatter
from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="directory of prediction files, one per video")
    p.add_argument("--gt-fps", type=float, default=None,
                   help="rate of the ground-truth rows (Cholec80 phase files: 25). Default: the "
                        "fps.json beside the files (eval writes it), else 25, but then a prediction "
                        "with as many rows as the ground truth is refused as ambiguous")
    p.add_argument("--fps", type=float, default=None,
                   help="evaluation fps, one prediction row per frame (default: the predictions' "
                        "fps.json, else 1); checked against the ground-truth rows")
    p.add_argument("--videos", default=None,
                   help="score only these videos: names, numbers or ranges (video41,42,49-80) or a "
                        "split name (cholec80_32_8_40 = its test videos, cholec80_32_8_40:val); "
                        "default: every video of the ground truth")
    p.add_argument("--truncate", action="store_true",
                   help="score the common prefix when ground truth and prediction lengths differ "
                        "(reported); default: error")
    p.add_argument("--json", metavar="FILE",
                   help="write the numbers and protocol as JSON, and the per-video table beside it "
                        "(FILE stem + .per_video.csv / .per_video.md)")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots to DIR")
    p.add_argument("--label", default=None,
                   help="a name (e.g. the split) shown on every printed line and in the JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="score_task", metavar="TASK", required=True,
                                help="what to score: phase, tools or anticipation")
    ph = sub.add_parser("phase", help="phase recognition: video-wise, per-phase, frame-pooled, "
                                      "segment and (on request) relaxed metrics",
                        formatter_class=HelpFormatter)
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
                        formatter_class=HelpFormatter)
    tl.add_argument("--gt", required=True, help="tool annotation directory (<video>-tool.txt)")
    _common(tl)

    an = sub.add_parser("anticipation", help="instrument anticipation: inMAE ... mMAE (minutes)",
                        formatter_class=HelpFormatter)
    an.add_argument("--tools", required=True,
                    help="tool annotation directory; the ground truth is built from it for --horizon")
    _common(an)
    an.add_argument("--horizon", type=float, required=True, help="horizon h in minutes (3 or 5), > 0")
    an.add_argument("--instruments", default=None,
                    help="comma-separated instruments (default: Bipolar,Scissors,Clipper,Irrigator,"
                         "SpecimenBag)")
    an.add_argument("--per-video", action="store_true",
                    help="pool per video then average (default: all frames pooled per instrument)")
    an.add_argument("--wmae", choices=["per_instrument", "pitfalls_bn"], default="per_instrument",
                    help="mean wMAE over instruments: per_instrument = mean of each instrument's "
                         "(inMAE+outMAE)/2 (MICCAI 2020); pitfalls_bn = (mean inMAE + mean outMAE)/2 "
                         "(the BN-pitfalls code's meter)")
    an.add_argument("--clip", action="store_true",
                    help="clip predictions to [0, horizon] before scoring (default: scored as written)")


def phase_vocabulary(spec: str) -> list[str]:
    key = spec.lower()
    if key == "cholec80":
        return list(labels.CHOLEC80_PHASES)
    if key == "autolaparo":
        return list(labels.AUTOLAPARO_PHASES)

    from surgflow.data.annotations import parse_mapping  # light: --help imports commands/

    if not Path(spec).is_file():
        raise SurgflowError(f"--phases {spec!r}: not cholec80, autolaparo or an existing mapping file")
    return parse_mapping(spec)


def check_outputs(args) -> None:
    """--json FILE (and the per-video tables beside it) and --plots DIR can be written."""
    from surgflow.outputs import check_output_file, check_writable_dir  # light: --help imports commands/

    if args.json:
        path = Path(args.json)
        check_output_file(path, "--json")
        for ext in (".per_video.csv", ".per_video.md"):  # per_video.write_per_video's names
            check_output_file(path.with_name(path.stem + ext), "--json")
    if args.plots:
        check_writable_dir(args.plots, "plots folder", "--plots", keep=False)


def run(args) -> int:
    from surgflow.evaluation import files, per_video, plots, score  # light: --help imports commands/

    notes: list[str] = []
    written: list = []
    check_outputs(args)  # before reading and scoring: a path that cannot be written is a message
    gt_dir = args.tools if args.score_task == "anticipation" else args.gt
    if args.score_task == "anticipation" and not args.horizon > 0:
        raise SurgflowError(f"--horizon must be a positive number of minutes (3 or 5 in the "
                            f"literature), got {args.horizon:g}")
    rates = files.rates_for(gt_dir, args.pred, args.gt_fps, args.fps,
                            "phase" if args.score_task == "phase" else "tool")
    extra = {**rates.protocol(), "videos_selection": args.videos}
    common = dict(truncate=args.truncate, notes=notes, videos=args.videos, rates=rates)
    fps = rates.fps
    if args.score_task == "phase":
        names = phase_vocabulary(args.phases)
        gts, preds = files.load_phase_dirs(gt_dir, args.pred, names, **common)
        result = score.score_phase(gts, preds, names, fps, relaxed=args.relaxed,
                                   gt_only=args.gt_only, label=args.label, notes=notes,
                                   protocol_extra=extra)
        if args.plots:
            written = plots.phase_ribbons(gts, preds, names, args.plots, fps, args.label)
            written.append(plots.confusion_matrix_plot(np.array(result["confusion"]), names,
                                                       f"{args.plots}/confusion.png", args.label))
    elif args.score_task == "tools":
        gts, preds, names = files.load_tool_dirs(gt_dir, args.pred, None, **common)
        result = score.score_tools(gts, preds, names, fps, label=args.label, notes=notes,
                                   protocol_extra=extra)
    else:
        inst = ([s.strip() for s in args.instruments.split(",") if s.strip()]
                if args.instruments else list(ANTICIPATION_INSTRUMENTS))
        gts, preds = files.load_anticipation_dirs(gt_dir, args.pred, inst, args.horizon, **common)
        result = score.score_anticipation(gts, preds, inst, args.horizon, fps,
                                          per_video=args.per_video, label=args.label, notes=notes,
                                          clip=args.clip, wmae=args.wmae, protocol_extra=extra)
        if args.plots:
            written = plots.anticipation_curves(gts, preds, inst, args.horizon, args.plots,
                                                fps, args.label)
    print(score.format_table(result))
    print(per_video.format_per_video(result))
    if written:
        print(f"wrote {len(written)} plots to {args.plots}")
    if args.json:
        score.write_json(result, args.json)
        tables = per_video.write_per_video(result, args.json)
        print(f"wrote {args.json}, {tables[0]}, {tables[1]}")
    return 0
