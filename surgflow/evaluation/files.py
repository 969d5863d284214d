"""Read and write ground-truth and prediction files for `surgflow score` and `surgflow eval`.

Layout (ARCHITECTURE.md, "Prediction files"), one file per video in a directory:
    <video>-phase.txt          header `Frame\\tPhase`, one row per evaluated frame, name or 0-based id
    <video>-tool.txt           header `Frame\\t<tool>...`, probabilities or 0/1
    <video>-anticipation.txt   header `Frame\\t<instrument>...`, minutes
    fps.json                   {"fps": rate of the rows, ...}: written by eval beside its files
Ground truth is read in the official Cholec80 format (phase rows at 25 fps, tool rows every 25
frames) and subsampled to the evaluation fps by keeping the rows whose Frame is a multiple of
round(gt_fps / fps) (1-fps frame i = 25-fps row 25 i), or read as is when gt_fps == fps.

Rates (rates.py) are never guessed: a flag, else the directory's fps.json, else the default, then
checked against the rows. With a stated or recorded ground-truth rate, a prediction with one row per
annotation row (as some methods write) is subsampled like the ground truth, unless its own
fps.json says otherwise; with only the default rate that pair is ambiguous and refused.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from surgflow.data import splits
from surgflow.data.annotations import parse_phase_file, parse_tool_file, read_lines, split_fields
from surgflow.data.targets import anticipation_targets
from surgflow.evaluation.rates import (  # noqa: F401 (frame_step, subsample, sidecar: re-exported)
    FPS_SIDECAR, Rates, check_rate_lengths, frame_step, kept_rows, note_subsampled, pred_at_rate,
    resolve_rates, subsample, write_fps_sidecar)
from surgflow.io_utils import SurgflowError, atomic_write_text

SUFFIX = {"phase": "-phase.txt", "tool": "-tool.txt", "anticipation": "-anticipation.txt"}


# ---------------------------------------------------------------- video selection

def select_videos(spec: str, available: Sequence[str], where="the ground truth") -> list[str]:
    """`--videos`: comma-separated names, numbers, ranges `41-80` (numbers match the video whose
    name ends in them, like named splits), or split names (`cholec80_32_8_40` = its test videos,
    `cholec80_32_8_40:val`); -> sorted names, every one present in `available`."""
    available = sorted(available)
    tokens = [t.strip() for t in str(spec).split(",") if t.strip()]
    if not tokens:
        raise SurgflowError(f"--videos {spec!r}: give names, numbers, ranges (41-80) or a split name")
    chosen, missing, index = set(), [], None
    for tok in tokens:
        name, _, subset = tok.partition(":")
        if name in splits.SPLITS:
            subset = subset or "test"
            if subset not in splits.SUBSETS:
                raise SurgflowError(f"--videos {tok!r}: subset must be one of {', '.join(splits.SUBSETS)}")
            ids = splits.SPLIT_IDS.get(name)
            if ids is None:  # 'auto', 'all': defined on the available videos
                chosen.update(splits.resolve_split(name, available)[subset])
                continue
            nums = ids.get(subset, [])
        else:
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", tok)
            if m:
                nums = range(int(m.group(1)), int(m.group(2)) + 1)
            elif tok.isdigit():
                nums = [int(tok)]
            else:
                (chosen.add(tok) if tok in available else missing.append(tok))
                continue
        index = splits._number_index(available) if index is None else index
        for n in nums:
            (chosen.add(index[n]) if n in index else missing.append(str(n)))
    if missing:
        raise SurgflowError(f"--videos {spec!r}: not in {where}: {', '.join(missing[:20])}"
                            f"{' ...' if len(missing) > 20 else ''}; available: "
                            f"{compact_names(available)}")
    if not chosen:
        raise SurgflowError(f"--videos {spec!r} selects no video")
    return sorted(chosen)


def compact_names(names: Sequence[str]) -> str:
    """'video01..video05, video09' for sorted names with a shared prefix and consecutive numbers."""
    parts: list[list] = []
    for n in sorted(names):
        m = re.fullmatch(r"(.*?)(\d+)", n)
        if m and parts and parts[-1][0] is not None:
            pre, num, width = parts[-1][0], parts[-1][2], parts[-1][3]
            if m.group(1) == pre and len(m.group(2)) == width and int(m.group(2)) == num + 1:
                parts[-1][2] = num + 1
                parts[-1][4] = n
                continue
        parts.append([m.group(1), n, int(m.group(2)), len(m.group(2)), n] if m else [None, n, 0, 0, n])
    return ", ".join(p[1] if p[1] == p[4] else f"{p[1]}..{p[4]}" for p in parts)


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


def rates_for(gt_dir, pred_dir, gt_fps: float | None, fps: float | None, gt_kind: str) -> Rates:
    """`resolve_rates` with the ground-truth directory resolved like the loaders do."""
    return resolve_rates(resolve_gt_dir(gt_dir, gt_kind), pred_dir, gt_fps, fps)


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


def paired_files(gt_dir, gt_kind: str, pred_dir, pred_kind: str, videos: str | None = None,
                 notes: list[str] | None = None):
    """Ground-truth and prediction files per video, and the videos to score: all that both
    directories hold (an error lists those present in only one), or the `videos` selection
    (`select_videos`; prediction files outside it are ignored, with a note)."""
    gt_dir = resolve_gt_dir(gt_dir, gt_kind)
    gt_files = list_videos(gt_dir, gt_kind)
    pred_files = list_videos(pred_dir, pred_kind)
    if videos is not None:
        chosen = select_videos(videos, list(gt_files), f"the ground truth {gt_dir}")
        extra = sorted(set(pred_files) - set(chosen))
        gt_files = {v: gt_files[v] for v in chosen}
        pred_files = {v: p for v, p in pred_files.items() if v in gt_files}
        if notes is not None:
            notes.append(f"--videos {videos}: {len(chosen)} video(s) scored"
                         + (f"; {len(extra)} prediction file(s) outside the selection ignored"
                            if extra else ""))
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

def read_phase_pred(path, phase_names: Sequence[str]) -> np.ndarray:
    """Prediction file -> int64 [N] phase ids, one per row."""
    return parse_phase_file(path, list(phase_names), what="phase prediction")[1]


def write_phase_file(path, labels: np.ndarray, phase_names: Sequence[str] | None = None) -> None:
    """`Frame\\tPhase` rows 0..N-1 with phase names (ids when `phase_names` is None); atomic."""
    labels = np.asarray(labels, dtype=np.int64)
    col = [phase_names[i] for i in labels] if phase_names is not None else [str(i) for i in labels]
    atomic_write_text(path, "Frame\tPhase\n" + "".join(f"{i}\t{c}\n" for i, c in enumerate(col)))


def load_phase_dirs(gt_dir, pred_dir, phase_names: Sequence[str], gt_fps: float | None = None,
                    fps: float | None = None, truncate: bool = False, notes: list[str] | None = None,
                    videos: str | None = None, rates: Rates | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """-> (gts, preds) {video: int64 [N]} at the evaluation fps (rates: `resolve_rates`)."""
    rates = rates or rates_for(gt_dir, pred_dir, gt_fps, fps, "phase")
    gt_files, pred_files, names = paired_files(gt_dir, "phase", pred_dir, "phase", videos, notes)
    step = frame_step(rates.gt_fps, rates.fps)
    gts, preds, sub = {}, {}, []
    for v in names:
        frames, ids = parse_phase_file(gt_files[v], list(phase_names), what="phase ground-truth")
        g = ids[kept_rows(gt_files[v], frames, rates, step)]
        pf, p = parse_phase_file(pred_files[v], list(phase_names), what="phase prediction")
        p = pred_at_rate(v, pf, p, len(ids), len(g), rates, step, sub)
        check_rate_lengths(v, len(ids), len(g), len(p), rates, truncate, notes)
        gts[v], preds[v] = align_lengths(v, g, p, truncate, notes)
    note_subsampled(notes, sub, step)
    return gts, preds


# ---------------------------------------------------------------- float tables (tools, anticipation)

def read_table(path, columns: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """`Frame\\t<col>...` with float values -> (frames int64 [R], values float64 [R, len(columns)])
    in `columns` order (any column order in the file, extra columns ignored). NaN/inf rejected."""
    path = Path(path)
    lines = read_lines(path, what)
    header = [h.strip() for h in split_fields(lines[0])]
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
        table = np.array([split_fields(ln) for ln in lines[1:]], dtype=np.float64)
    except ValueError:
        for n, ln in enumerate(lines[1:], start=2):
            parts = split_fields(ln)
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


def tool_names_of(path) -> list[str]:
    """Tool names from the header of a tool file (all columns after Frame)."""
    header = [h.strip() for h in split_fields(read_lines(Path(path), "tool annotation")[0])]
    if not header or header[0].lower() != "frame" or len(header) < 2:
        got = "\\t".join(header)
        raise SurgflowError(f"{path}: line 1: expected header 'Frame\\t<tool>...', got {got!r}")
    return header[1:]


def load_tool_dirs(gt_dir, pred_dir, tool_names: Sequence[str] | None = None,
                   gt_fps: float | None = None, fps: float | None = None, truncate: bool = False,
                   notes: list[str] | None = None, videos: str | None = None,
                   rates: Rates | None = None):
    """-> (gts {video: [N, K]}, preds {video: [N, K]}, tool_names)."""
    rates = rates or rates_for(gt_dir, pred_dir, gt_fps, fps, "tool")
    gt_files, pred_files, names = paired_files(gt_dir, "tool", pred_dir, "tool", videos, notes)
    if tool_names is None:
        tool_names = tool_names_of(gt_files[names[0]])
    step = frame_step(rates.gt_fps, rates.fps)
    gts, preds, sub = {}, {}, []
    for v in names:
        frames, values = parse_tool_file(gt_files[v], list(tool_names))
        g = values[kept_rows(gt_files[v], frames, rates, step)]
        pf, p = read_table(pred_files[v], tool_names, "tool prediction")
        p = pred_at_rate(v, pf, p, len(values), len(g), rates, step, sub)
        check_rate_lengths(v, len(values), len(g), len(p), rates, truncate, notes)
        gts[v], preds[v] = align_lengths(v, g, p, truncate, notes, what="tool")
    note_subsampled(notes, sub, step)
    return gts, preds, list(tool_names)


def load_anticipation_dirs(tool_dir, pred_dir, instruments: Sequence[str], horizon: float,
                           gt_fps: float | None = None, fps: float | None = None,
                           truncate: bool = False, notes: list[str] | None = None,
                           videos: str | None = None, rates: Rates | None = None):
    """Ground truth built from tool annotations for horizon h (minutes) -> (gts, preds)
    {video: float64 [N, I] minutes}; targets are exact float64 frame distances / (60 fps)."""
    if not (math.isfinite(horizon) and horizon > 0):
        raise SurgflowError(f"--horizon must be a positive number of minutes (3 or 5 in the "
                            f"literature), got {horizon:g}")
    rates = rates or rates_for(tool_dir, pred_dir, gt_fps, fps, "tool")
    gt_files, pred_files, names = paired_files(tool_dir, "tool", pred_dir, "anticipation", videos,
                                               notes)
    step = frame_step(rates.gt_fps, rates.fps)
    gts, preds, sub = {}, {}, []
    for v in names:
        cols = tool_names_of(gt_files[v])
        missing = [i for i in instruments if i.lower() not in {n.lower() for n in cols}]
        if missing:
            raise SurgflowError(f"{gt_files[v]}: no column for instrument(s) {', '.join(missing)}; "
                                f"tool columns: {', '.join(cols)}")
        frames, values = parse_tool_file(gt_files[v], cols)
        kept = values[kept_rows(gt_files[v], frames, rates, step)]
        lower = [n.lower() for n in cols]
        present = kept[:, [lower.index(i.lower()) for i in instruments]] > 0.5
        g = anticipation_targets(present, rates.fps, horizon, dtype=np.float64)
        pf, p = read_table(pred_files[v], instruments, "anticipation prediction")
        p = pred_at_rate(v, pf, p, len(values), len(kept), rates, step, sub)
        check_rate_lengths(v, len(values), len(g), len(p), rates, truncate, notes)
        gts[v], preds[v] = align_lengths(v, g, p, truncate, notes, what="anticipation")
    note_subsampled(notes, sub, step)
    return gts, preds
