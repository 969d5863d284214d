"""Flag conventions shared by every command, so each one is spelled and parsed the same way:

- sizes are WIDTHxHEIGHT on the command line (like the paper's "384x216") and (H, W) in the code;
- `--device auto|cpu|cuda|cuda:N` (auto = the first GPU when there is one, else the CPU);
- `--checkpoint kept|best|last|PATH` picks the checkpoint of a run directory (kept = the one the
  run's train.keep names; `--which` is the old spelling, still accepted with a warning).
"""
from __future__ import annotations

import argparse
import re
import sys

from surgflow.io_utils import SurgflowError

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str, flag: str = "--size", even: bool = False, minimum: int = 1) -> tuple[int, int]:
    """'384x216' (WIDTHxHEIGHT) -> (H, W) = (216, 384). Anything but two positive integers joined
    by one 'x' is refused (no '384,216', '384', '384x216x3', '0x10')."""
    m = _SIZE.match(str(text))
    if not m:
        raise SurgflowError(f"{flag} {text!r}: expected WIDTHxHEIGHT with two integers, e.g. 384x216")
    w, h = int(m.group(1)), int(m.group(2))
    if w < minimum or h < minimum:
        raise SurgflowError(f"{flag} {text!r}: width and height must be >= {minimum}")
    if even and (w % 2 or h % 2):
        raise SurgflowError(f"{flag} {text!r}: width and height must be even (video encoders need it)")
    return h, w


def format_size(hw) -> str:
    """(H, W) -> 'WxH', the command-line spelling."""
    h, w = (int(v) for v in hw)
    return f"{w}x{h}"


def check_orientation(hw: tuple[int, int], reference_hw, flag: str = "--size") -> None:
    """Refuse a size whose aspect ratio is the recorded (H, W) turned sideways (within 3 %):
    almost surely HEIGHTxWIDTH typed where WIDTHxHEIGHT is meant (the old `audit --size` order)."""
    if not reference_hw:
        return
    rh, rw = (int(v) for v in reference_hw)
    h, w = hw
    ref, given = rh / rw, h / w
    if abs(ref - 1) > 0.05 and abs(given * ref - 1) < 0.03:
        fixed = f"{h}x{w}"  # the same numbers in WIDTHxHEIGHT order
        raise SurgflowError(
            f"{flag} {format_size(hw)}: the model's frames are {format_size((rh, rw))} "
            f"(WIDTHxHEIGHT) and this is that shape turned sideways; sizes are WIDTHxHEIGHT: "
            f"did you mean {fixed}?")


def size_type(even: bool = False, minimum: int = 1):
    """An argparse `type=` for WIDTHxHEIGHT flags: returns (H, W); bad text is an argparse error."""

    def _parse(text: str) -> tuple[int, int]:
        try:
            return parse_size(text, even=even, minimum=minimum)
        except SurgflowError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None

    _parse.__name__ = "WIDTHxHEIGHT"  # argparse names the type in its error message
    return _parse


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; a CUDA device without CUDA is an error."""
    import torch  # heavy: every command imports cli_args; only --device needs torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SurgflowError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SurgflowError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SurgflowError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type != "cpu":
        raise SurgflowError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return str(dev)


class _DeprecatedAlias(argparse.Action):
    """Store the value; warn once when the old option spelling was used."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in getattr(self, "deprecated", ()):
            print(f"warning: {option_string} is deprecated; use {self.option_strings[0]}",
                  file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_checkpoint(parser: argparse.ArgumentParser, paths: bool = True) -> None:
    """`--checkpoint kept|best|last|PATH` (old spelling `--which`)."""
    action = parser.add_argument(
        "--checkpoint", "--which", dest="checkpoint", default="kept", metavar="CKPT",
        action=_DeprecatedAlias,
        help="checkpoint of a run directory: kept (the one its train.keep names), best (best "
             "validation score), last" + (", or a checkpoint file" if paths else "")
             + " (--which is the old spelling)")
    action.deprecated = ("--which",)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' only where it says something: not for required flags, switches, a
    None default, or help text that already states its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.required or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction))
                or "default" in text.lower() or not action.option_strings):
            return text
        return super()._get_help_string(action)
