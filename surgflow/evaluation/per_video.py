"""Per-video tables of a score_* result: printed, and written as CSV and Markdown beside the JSON.

One row per scored video (the numbers the JSON keeps under `per_video`), the columns, digits and
unit the task's evaluation declares (score.TaskEvaluation): phase accuracy and macro metrics
(percent), tool mAP (percent), anticipation errors averaged over instruments (minutes).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from surgflow.evaluation.score import evaluation_of
from surgflow.io_utils import atomic_write_text

def _evaluation(result: dict):
    return evaluation_of(result["task"])  # its columns, digits and unit


def table(result: dict) -> tuple[list[str], list[list]]:
    """(column names, rows [video, frames, metric...]) of a score_* result."""
    metrics = _evaluation(result).per_video_columns
    rows = [[v, int(r["frames"]), *(r.get(m) for m in metrics)]
            for v, r in result["per_video"].items()]
    return ["video", "frames", *metrics], rows


def _num(x, digits: int) -> str | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return f"{float(x):.{digits}f}"


def _digits(result: dict) -> int:
    return _evaluation(result).per_video_digits


def _unit(result: dict) -> str:
    return _evaluation(result).per_video_unit


def format_per_video(result: dict) -> str:
    """Aligned text; every line starts with `[label]` when the result is labelled."""
    cols, rows = table(result)
    d = _digits(result)
    width = max([len("video")] + [len(r[0]) for r in rows]) + 2
    lines = [_evaluation(result).per_video_title or f"per video ({_unit(result)})"]
    lines.append(f"  {cols[0]:<{width}}{cols[1]:>7}" + "".join(f"{c:>10}" for c in cols[2:]))
    for r in rows:
        lines.append(f"  {r[0]:<{width}}{r[1]:>7}" + "".join(
            f"{_num(x, d) or 'n/a':>10}" for x in r[2:]))
    label = result.get("label")
    return "\n".join(f"[{label}] {ln}" if label else ln for ln in lines)


def to_csv(result: dict) -> str:
    cols, rows = table(result)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:  # undefined (NaN) -> empty cell
        w.writerow([r[0], r[1], *(_num(x, 6) or "" for x in r[2:])])
    return buf.getvalue()


def to_markdown(result: dict) -> str:
    cols, rows = table(result)
    d = _digits(result)
    head = f"{result['task']} per video ({_unit(result)})"
    out = [f"# {head}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join([r[0], str(r[1]), *(_num(x, d) or "n/a" for x in r[2:])]) + " |")
    return "\n".join(out) + "\n"


def write_per_video(result: dict, json_path, tag: str = "") -> list[Path]:
    """`<stem>[.tag].per_video.csv` and `.md` beside `json_path`; atomic. Returns the paths."""
    json_path = Path(json_path)
    base = json_path.stem + (f".{tag}" if tag else "") + ".per_video"
    paths = [json_path.with_name(base + ".csv"), json_path.with_name(base + ".md")]
    atomic_write_text(paths[0], to_csv(result))
    atomic_write_text(paths[1], to_markdown(result))
    return paths
