"""`surgflow score TASK`: score prediction files of any method against ground truth with stated
protocols (terminal table, JSON with a `protocol` block, optional plots). TASK is any registered
task whose evaluation has a file scorer (phase, tools, anticipation, and plugins): its flags come
from its `TaskEvaluation.add_score_arguments`, so a new task needs no change here. The task's
parser is built when it is named, so `surgflow --help` does not import the task registry (torch)."""
from __future__ import annotations

import argparse
from pathlib import Path

from surgflow.cli_args import HelpFormatter
from surgflow.io_utils import SurgflowError


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
    parser.add_argument("task", metavar="TASK", nargs="?",
                        help="what to score: phase, tools, anticipation, or any registered task with "
                             "a file scorer; `surgflow score TASK --help` lists its flags")
    parser.add_argument("task_args", metavar="FLAGS", nargs=argparse.REMAINDER,
                        help="the task's flags (--gt/--tools, --pred, ...; see `surgflow score TASK "
                             "--help`)")


def scorable_tasks() -> list[str]:
    """Registered tasks whose evaluation scores files, in Task.order."""
    from surgflow.evaluation.score import evaluation_of, task_names  # light: --help imports commands/

    return [t for t in task_names() if evaluation_of(t).score_help]


def task_parser(task: str) -> argparse.ArgumentParser:
    """`surgflow score TASK`'s parser: the task's own flags, then the common ones."""
    from surgflow.evaluation.score import evaluation_of  # light: --help imports commands/

    tasks = scorable_tasks()
    if task is None:
        raise SurgflowError(f"name the task to score: {', '.join(tasks)} (`surgflow score TASK "
                            f"--help` lists its flags)")
    if task not in tasks:
        raise SurgflowError(f"no task {task!r} with a file scorer; choose one of "
                            f"{', '.join(tasks)}")
    ev = evaluation_of(task)
    p = argparse.ArgumentParser(prog=f"surgflow score {task}", description=ev.score_help,
                                formatter_class=HelpFormatter)
    ev.add_score_arguments(p)
    _common(p)
    return p


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
    from surgflow.evaluation import per_video, score  # light: --help imports commands/

    parser = task_parser(args.task)
    try:
        targs = parser.parse_args(args.task_args)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    notes: list[str] = []
    check_outputs(targs)  # before reading and scoring: a path that cannot be written is a message
    result, written = score.evaluation_of(args.task).score_files(targs, notes)
    print(score.format_table(result))
    print(per_video.format_per_video(result))
    if written:
        print(f"wrote {len(written)} plots to {targs.plots}")
    if targs.json:
        score.write_json(result, targs.json)
        tables = per_video.write_per_video(result, targs.json)
        print(f"wrote {targs.json}, {tables[0]}, {tables[1]}")
    return 0
