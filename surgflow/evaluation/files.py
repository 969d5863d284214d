"""Read and write ground-truth and prediction files for `surgflow score` and `surgflow eval`.

Layout (ARCHITECTURE.md, "Prediction files"), one file per video in a directory:
    <video>-phase.txt          header `Frame\\tPhase`, one row per evaluated frame, name or 0-based id
    <video>-tool.txt           header `Frame\\t<tool>...`, probabilities or 0/1
    <video>-anticipation.txt   header `Frame\\t<instrument>...`, minutes
Ground truth is read in the official Cholec80 format (phase rows at 25 fps, tool rows every 25
frames) and subsampled to the evaluation fps by keeping the rows whose Frame is a multiple of
round(gt_fps / fps) (1-fps frame i = 25-fps row 25 i), or read as is when gt_fps == fps.
A prediction file with as many rows as the raw ground-truth file is subsampled the same way
(some methods write one row per 25-fps frame); otherwise it must have one row per evaluated frame.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from surgflow.data.annotations import _read_lines, _split, parse_phase_file, parse_tool_file
from surgflow.io_utils import SurgflowError, atomic_write_text

SUFFIX = {"phase": "-phase.txt", "tool": "-tool.txt", "anticipation": "-anticipation.txt"}


def frame_step(gt_fps: float, fps: float) -> int:
    """Rows of the ground truth per evaluated frame (25 for 25-fps annotations scored at 1 fps)."""
    if fps <= 0 or gt_fps <= 0:
        raise SurgflowError(f"fps must be positive (got --gt-fps {gt_fps}, --fps {fps})")
    ratio = gt_fps / fps
    step = int(round(ratio))
    if step < 1 or not math.isclose(ratio, step, rel_tol=1e-6):
        raise SurgflowError(f"--gt-fps {gt_fps} is not an integer multiple of --fps {fps}; "
                            f"choose an evaluation fps that divides the annotation fps")
    return step


def subsample(frames: np.ndarray, step: int) -> np.ndarray:
    """Boolean mask of the rows kept at the evaluation fps (Frame % step == 0)."""
    return (np.asarray(frames) % step) == 0 if step > 1 else np.ones(len(frames), dtype=bool)


def list_videos(directory, kind: str) -> dict[str, Path]:
    """{video: path} of the `<video>-<kind>.txt` files in `directory` (sorted by name)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SurgflowError(f"directory not found: {directory}")
    suffix = SUFFIX[kind]
    out = {p.name[: -len(suffix)]: p for p in sorted(directory.glob(f"*{suffix}"))}
    if not out:
        raise SurgflowError(f"{directory}: no '*{suffix}' files; expected one file per video "
                            f"named like video01{suffix}")
    return out


def resolve_gt_dir(directory, kind: str) -> Path:
    """Accept the Cholec80 root as well as its phase_annotations/ or tool_annotations/ folder."""
    directory = Path(directory)
    sub = directory / ("phase_annotations" if kind == "phase" else "tool_annotations")
    if kind in ("phase", "tool") and sub.is_dir() and not any(directory.glob(f"*{SUFFIX[kind]}")):
        return sub
    return directory


def match_videos(gt: dict, pred: dict, gt_dir, pred_dir) -> list[str]:
    """Videos present in both; an error listing the ones present in only one directory."""
    only_gt = sorted(set(gt) - set(pred))
    only_pred = sorted(set(pred) - set(gt))
    if only_gt or only_pred:
        msg = []
        if only_gt:
            msg.append(f"missing from predictions {pred_dir}: {', '.join(only_gt)}")
        if only_pred:
            msg.append(f"missing from ground truth {gt_dir}: {', '.join(only_pred)}")
        raise SurgflowError("videos differ between ground truth and predictions; "
                            + "; ".join(msg) + "; add the missing files or remove the extra ones")
    return sorted(gt)


def paired_files(gt_dir, gt_kind: str, pred_dir, pred_kind: str):
    """Ground-truth and prediction files per video, and the videos both directories hold
    (an error lists those present in only one)."""
    gt_dir = resolve_gt_dir(gt_dir, gt_kind)
    gt_files = list_videos(gt_dir, gt_kind)
    pred_files = list_videos(pred_dir, pred_kind)
    return gt_files, pred_files, match_videos(gt_files, pred_files, gt_dir, pred_dir)


def align_lengths(video: str, gt: np.ndarray, pred: np.ndarray, truncate: bool,
                  notes: list[str] | None = None, what: str = "phase") -> tuple[np.ndarray, np.ndarray]:
    """Equal lengths or an error naming the video and both lengths; with `truncate`, the common
    prefix is kept and a note is appended to `notes` (the report says so)."""
    if len(gt) == len(pred):
        return gt, pred
    if not truncate:
        raise SurgflowError(f"{video}: {what} ground truth has {len(gt)} frames at the evaluation fps, "
                            f"prediction has {len(pred)}; fix the prediction file or pass --truncate "
                            f"to score the common prefix")
    n = min(len(gt), len(pred))
    if notes is not None:
        notes.append(f"{video}: truncated to the common prefix of {n} frames "
                     f"(ground truth {len(gt)}, prediction {len(pred)})")
    return gt[:n], pred[:n]


# ---------------------------------------------------------------- phase

def read_phase_gt(path, phase_names: Sequence[str], gt_fps: float = 25.0, fps: float = 1.0) -> np.ndarray:
    """Ground-truth phase file -> int64 [N] at the evaluation fps."""
    frames, ids = parse_phase_file(path, list(phase_names), what="phase ground-truth")
    return ids[subsample(frames, frame_step(gt_fps, fps))]


def read_phase_pred(path, phase_names: Sequence[str], gt_rows: int | None = None,
                    step: int = 1) -> np.ndarray:
    """Prediction file -> int64 [N]; subsampled like the ground truth when it has `gt_rows` rows."""
    frames, ids = parse_phase_file(path, list(phase_names), what="phase prediction")
    if step > 1 and gt_rows is not None and len(ids) == gt_rows:
        ids = ids[subsample(frames, step)]
    return ids


def write_phase_file(path, labels: np.ndarray, phase_names: Sequence[str] | None = None) -> None:
    """`Frame\\tPhase` rows 0..N-1 with phase names (ids when `phase_names` is None); atomic."""
    labels = np.asarray(labels, dtype=np.int64)
    col = [phase_names[i] for i in labels] if phase_names is not None else [str(i) for i in labels]
    atomic_write_text(path, "Frame\tPhase\n" + "".join(f"{i}\t{c}\n" for i, c in enumerate(col)))


def load_phase_dirs(gt_dir, pred_dir, phase_names: Sequence[str], gt_fps: float = 25.0,
                    fps: float = 1.0, truncate: bool = False, notes: list[str] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    gt_files, pred_files, videos = paired_files(gt_dir, "phase", pred_dir, "phase")
    step = frame_step(gt_fps, fps)
    gts, preds = {}, {}
    for v in videos:
        frames, ids = parse_phase_file(gt_files[v], list(phase_names), what="phase ground-truth")
        g = ids[subsample(frames, step)]
        # a prediction at the annotation rate is subsampled like the ground truth
        p = read_phase_pred(pred_files[v], phase_names, gt_rows=len(ids) if len(g) != len(ids) else None,
                            step=step)
        gts[v], preds[v] = align_lengths(v, g, p, truncate, notes)
    return gts, preds


# ---------------------------------------------------------------- float tables (tools, anticipation)

def read_table(path, columns: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """`Frame\\t<col>...` with float values -> (frames int64 [R], values float64 [R, len(columns)])
    in `columns` order (any column order in the file, extra columns ignored). NaN/inf rejected."""
    path = Path(path)
    lines = _read_lines(path, what)
    header = [h.strip() for h in _split(lines[0])]
    if not header or header[0].lower() != "frame":
        want = "\\t".join(["Frame", *columns])
        raise SurgflowError(f"{path}: line 1: expected header '{want}', got {lines[0]!r}; "
                            f"add the header line (tab separated)")
    lookup = {h.lower(): i for i, h in enumerate(header)}
    missing = [c for c in columns if c.lower() not in lookup]
    if missing:
        raise SurgflowError(f"{path}: line 1: missing column(s) {', '.join(missing)}; the header "
                            f"must list Frame and {', '.join(columns)}")
    if len(lines) < 2:
        raise SurgflowError(f"{path}: {what} file has a header but no rows")
    try:
        table = np.array([_split(ln) for ln in lines[1:]], dtype=np.float64)
    except ValueError:
        for n, ln in enumerate(lines[1:], start=2):
            parts = _split(ln)
            if len(parts) != len(header):
                raise SurgflowError(f"{path}: line {n}: expected {len(header)} columns, got "
                                    f"{len(parts)}: {ln!r}") from None
            try:
                [float(x) for x in parts]
            except ValueError:
                raise SurgflowError(f"{path}: line {n}: non-numeric value in {ln!r}") from None
        raise
    if table.ndim != 2 or table.shape[1] != len(header):
        raise SurgflowError(f"{path}: every row must have {len(header)} columns like the header")
    values = table[:, [lookup[c.lower()] for c in columns]]
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SurgflowError(f"{path}: line {r + 2}: {columns[c]} is {values[r, c]} (NaN or inf); "
                            f"every {what} value must be a finite number")
    return table[:, 0].astype(np.int64), values


def write_table(path, values: np.ndarray, columns: Sequence[str], fmt: str = "{:.9g}") -> None:
    """`Frame\\t<col>...` rows 0..N-1; atomic. 9 significant digits round-trip float32 exactly."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(columns))
    rows = ["\t".join(["Frame", *columns])]
    rows += [f"{i}\t" + "\t".join(fmt.format(x) for x in row) for i, row in enumerate(values)]
    atomic_write_text(path, "\n".join(rows) + "\n")


def read_tool_gt(path, tool_names: Sequence[str], gt_fps: float = 25.0, fps: float = 1.0) -> np.ndarray:
    """Ground-truth tool file (0/1) -> float32 [N, K] at the evaluation fps."""
    frames, values = parse_tool_file(path, list(tool_names))
    return values[subsample(frames, frame_step(gt_fps, fps))]


def tool_names_of(path) -> list[str]:
    """Tool names from the header of a tool file (all columns after Frame)."""
    header = [h.strip() for h in _split(_read_lines(Path(path), "tool annotation")[0])]
    if not header or header[0].lower() != "frame" or len(header) < 2:
        got = "\\t".join(header)
        raise SurgflowError(f"{path}: line 1: expected header 'Frame\\t<tool>...', got {got!r}")
    return header[1:]


def load_tool_dirs(gt_dir, pred_dir, tool_names: Sequence[str] | None = None, gt_fps: float = 25.0,
                   fps: float = 1.0, truncate: bool = False, notes: list[str] | None = None):
    """-> (gts {video: [N, K]}, preds {video: [N, K]}, tool_names)."""
    gt_files, pred_files, videos = paired_files(gt_dir, "tool", pred_dir, "tool")
    if tool_names is None:
        tool_names = tool_names_of(gt_files[videos[0]])
    step = frame_step(gt_fps, fps)
    gts, preds = {}, {}
    for v in videos:
        frames, values = parse_tool_file(gt_files[v], list(tool_names))
        g = values[subsample(frames, step)]
        pf, p = read_table(pred_files[v], tool_names, "tool prediction")
        if len(g) != len(values) and len(p) == len(values):  # prediction at the annotation rate
            p = p[subsample(pf, step)]
        gts[v], preds[v] = align_lengths(v, g, p, truncate, notes, what="tool")
    return gts, preds, list(tool_names)


def load_anticipation_dirs(tool_dir, pred_dir, instruments: Sequence[str], horizon: float,
                           gt_fps: float = 25.0, fps: float = 1.0, truncate: bool = False,
                           notes: list[str] | None = None):
    """Ground truth built from tool annotations for horizon h (minutes) -> (gts, preds)
    {video: float [N, I] minutes}."""
    from surgflow.data.targets import anticipation_targets

    gt_files, pred_files, videos = paired_files(tool_dir, "tool", pred_dir, "anticipation")
    step = frame_step(gt_fps, fps)
    gts, preds = {}, {}
    for v in videos:
        names = tool_names_of(gt_files[v])
        missing = [i for i in instruments if i.lower() not in {n.lower() for n in names}]
        if missing:
            raise SurgflowError(f"{gt_files[v]}: no column for instrument(s) {', '.join(missing)}; "
                                f"tool columns: {', '.join(names)}")
        frames, values = parse_tool_file(gt_files[v], names)
        values = values[subsample(frames, step)]
        lower = [n.lower() for n in names]
        present = values[:, [lower.index(i.lower()) for i in instruments]] > 0.5
        g = np.asarray(anticipation_targets(present, fps, horizon), dtype=np.float64)
        _, p = read_table(pred_files[v], instruments, "anticipation prediction")
        gts[v], preds[v] = align_lengths(v, g, p, truncate, notes, what="anticipation")
    return gts, preds
