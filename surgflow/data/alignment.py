"""Label alignment: which annotation row labels each prepared frame, and what to do when decoded
frame counts and annotation rows differ (docs/DOMAIN.md section 4: detect, report, align explicitly)."""
from __future__ import annotations

import math

import numpy as np

from surgflow.io_utils import SurgflowError


def rows_for(n: int, fps: float, label_fps: float) -> np.ndarray:
    """Row index closest in time to each output frame i (time i / fps) at `label_fps`."""
    t = np.arange(n, dtype=np.float64) / fps
    return np.floor(t * label_fps + 0.5 + 1e-9).astype(np.int64)


def align_labels(name: str, n_out: int, decoded: int, video_fps: float, fps: float, labels,
                 max_mismatch: int, phase_file: str, tool_file: str = "", why: str = ""):
    """Return (n_frames, phase [n], tools [n, K] or None, alignment text, label_rows, tool_rows).

    Counts are compared in rows of each file: expected rows = ceil(decoded * label_fps / video_fps).
    The tolerance is `max_mismatch` source frames converted to rows (at least one 1-fps tool row
    when max_mismatch > 0). Within it: trailing output frames without a phase row are dropped
    (truncate to the shorter), a missing final tool row is padded by repeating the last row,
    extra rows are ignored. Beyond it: SurgflowError naming the video, both counts and the flag;
    `why` (e.g. the variable-frame-rate note) is appended to that message.
    """
    notes = []
    tail = f". Note: {why}" if why else ""
    phase_fps = labels.phase_fps or video_fps
    R = len(labels.phase)
    exp = math.ceil(decoded * phase_fps / video_fps - 1e-9)
    tol = math.ceil(max_mismatch * phase_fps / video_fps - 1e-9)
    if abs(R - exp) > tol:
        raise SurgflowError(
            f"video {name}: decoded {decoded} frames at {video_fps:g} fps, so {exp} phase rows at "
            f"{phase_fps:g} fps are expected, but {phase_file} has {R} rows (difference "
            f"{abs(R - exp)} > tolerance {tol} rows = --max-mismatch {max_mismatch} source frames); "
            f"check that the annotation belongs to this video, or raise --max-mismatch{tail}")
    rows = rows_for(n_out, fps, phase_fps)
    n = int(np.searchsorted(rows, R))  # rows is non-decreasing: keep frames with a phase row
    if R == exp:
        notes.append(f"phase: {R} rows = {decoded} decoded frames at {phase_fps:g} fps")
    elif R < exp:
        notes.append(f"phase: {exp - R} row(s) fewer than decoded frames (within tolerance {tol}): "
                     f"truncated to the labelled part, dropped {n_out - n} output frame(s)")
    else:
        notes.append(f"phase: {R - exp} extra row(s) beyond the decoded frames (within tolerance "
                     f"{tol}): ignored")
    phase = labels.phase[rows[:n]].astype(np.int64)

    tools, Rt = None, 0
    if labels.tools is not None:
        Rt = len(labels.tools)
        t_exp = math.ceil(decoded * labels.tools_fps / video_fps - 1e-9)
        t_tol = max(1 if max_mismatch > 0 else 0,
                    math.ceil(max_mismatch * labels.tools_fps / video_fps - 1e-9))
        if abs(Rt - t_exp) > t_tol:
            raise SurgflowError(
                f"video {name}: decoded {decoded} frames at {video_fps:g} fps, so {t_exp} tool rows "
                f"at {labels.tools_fps:g} fps are expected, but {tool_file} has {Rt} rows "
                f"(difference {abs(Rt - t_exp)} > tolerance {t_tol} rows); check that the "
                f"annotation belongs to this video, or raise --max-mismatch{tail}")
        trows = rows_for(n, fps, labels.tools_fps)
        padded = int((trows >= Rt).sum())
        tools = labels.tools[np.minimum(trows, Rt - 1)].astype(np.float32)
        if Rt == t_exp:
            notes.append(f"tools: {Rt} rows = ceil({decoded} / {video_fps / labels.tools_fps:g})")
        elif Rt < t_exp:
            notes.append(f"tools: {t_exp - Rt} row(s) missing at the end (within tolerance "
                         f"{t_tol}): padded {padded} output frame(s) by repeating the last row")
        else:
            notes.append(f"tools: {Rt - t_exp} extra row(s) ignored")
    return n, phase, tools, "; ".join(notes), R, Rt
