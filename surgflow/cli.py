"""The `surgflow` command. Each subcommand lives in surgflow/commands/<name>.py with
`add_arguments(parser)` and `run(args) -> int`; heavy imports happen inside `run`."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from surgflow import __version__
from surgflow.cli_args import HelpFormatter
from surgflow.io_utils import SurgflowError

BARE_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+=")  # train.epochs=2

COMMANDS = [
    ("demo", "the main job: synthesize, prepare, train, evaluate and audit; writes report.md"),
    ("synth", "write a synthetic surgery dataset in the Cholec80 layout"),
    ("prepare", "decode raw videos once into a prepared frame store with aligned labels"),
    ("configs", "list the presets shipped with surgflow (one line each), or print one resolved"),
    ("train", "train a model end to end from a preset name or a YAML config"),
    ("eval", "run a trained model causally over whole videos and score it"),
    ("score", "score prediction files against ground truth (phase, tools, anticipation)"),
    ("audit", "audit a model for BatchNorm leakage of future or cross-sample information"),
    ("experiment", "reproduce the paper's experiments (cheating)"),
    ("predict", "online prediction on a video file or stream, with an optional rendered overlay"),
    ("export", "export the stateful one-frame step to ONNX"),
    ("view", "an interactive HTML page of a split's predictions against the truth (no server)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surgflow",
        description="End-to-end video learning for surgical workflow analysis. "
        "Start with `surgflow demo`; every subcommand has --help.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                help="the subcommand; `surgflow COMMAND --help` shows its flags")
    for name, help_text in COMMANDS:
        module = importlib.import_module(f"surgflow.commands.{name}")  # a broken module fails here
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # bare `key=value` overrides (Hydra/Lightning style) beside --set
            sub = getattr(args, "_parser", parser)
            bare = [a for a in extra if BARE_OVERRIDE.match(a)]
            if len(bare) < len(extra) or not hasattr(args, "overrides"):
                sub.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in bare) or ' '.join(extra)}"
                          + ("" if hasattr(args, "overrides") else
                             f" (`surgflow {args.command}` takes no config overrides)"))
            args.overrides = list(args.overrides) + bare
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.version:
        print(__version__)
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 0

    try:
        rc = int(args._module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at exit
        return rc
    except BrokenPipeError:
        # `surgflow score ... | head`: the reader has gone; stop quietly as a SIGPIPE would, with
        # the status a shell reports for it (128 + 13), and no second error at exit's flush
        _stdout_to_devnull()
        return 141
    except SurgflowError as e:
        print(f"surgflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"surgflow {args.command}: interrupted; finished work is kept, re-run to resume",
              file=sys.stderr)
        return 130
    except FileNotFoundError as e:
        if os.environ.get("SURGFLOW_DEBUG"):
            raise
        print(f"surgflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from surgflow.outputs import disk_full_error, is_disk_full  # light: --help path, a full disk only

        if not is_disk_full(e) or os.environ.get("SURGFLOW_DEBUG"):
            raise
        name = os.fsdecode(e.filename) if e.filename else None
        if name:  # `.NAME.xxxx.tmp` of an atomic write -> NAME, the file the user asked for
            m = re.fullmatch(r"\.(.+)\.[^./]+\.tmp", os.path.basename(name))
            name = os.path.join(os.path.dirname(name), m.group(1)) if m else name
            e = OSError(e.errno, e.strerror, name)  # (PyAV's errors have a read-only filename)
        where = os.path.dirname(os.path.abspath(name)) if name else os.getcwd()
        fix = (f"files written before are intact (atomic writes); free space in {where} or "
               f"choose another output folder, then run the command again")
        print(f"surgflow {args.command}: error: {disk_full_error(e, where, fix)}", file=sys.stderr)
        return 2


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
