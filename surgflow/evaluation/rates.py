"""Frame rates of ground-truth and prediction files: recorded, stated or default, and checked.

eval writes `fps.json` ({"fps": rate of the rows}) beside its prediction and ground-truth files;
`surgflow score` takes each rate from its flag (--gt-fps, --fps), else that file, else the default
(25 fps ground truth as in Cholec80, 1 fps evaluation), says which in the protocol, and checks the
rate against the rows: ground-truth rows sparser than the evaluation rate are refused, and a
prediction with as many rows as a ground truth that only the default rate would subsample is an
ambiguous pair, refused with a message naming --gt-fps.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgflow.io_utils import SurgflowError, atomic_write_json

FPS_SIDECAR = "fps.json"
DEFAULT_GT_FPS = 25.0  # Cholec80 annotation rate
DEFAULT_FPS = 1.0      # the field's evaluation rate


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


def write_fps_sidecar(directory, fps: float, content: str) -> Path:
    """Record the rate of the rows of every file in `directory` (fps.json); atomic."""
    path = Path(directory) / FPS_SIDECAR
    atomic_write_json(path, {"fps": float(fps), "content": content,
                             "rows": "one row per frame at fps; Frame = frame index at that rate"})
    return path


def read_fps_sidecar(directory) -> float | None:
    """The rate recorded in `directory`/fps.json, or None when there is none."""
    path = Path(directory) / FPS_SIDECAR
    if not path.is_file():
        return None
    try:
        fps = json.loads(path.read_text()).get("fps")
    except (ValueError, AttributeError):
        fps = None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise SurgflowError(f"{path}: expected a JSON object with a positive number \"fps\" (the rate "
                            f"of the rows); fix it, or delete it and pass --gt-fps / --fps")
    return float(fps)


@dataclass(frozen=True)
class Rates:
    """Where the two rates came from: a flag, a recorded fps.json, or the default."""
    gt_fps: float
    fps: float
    gt_source: str
    fps_source: str
    pred_recorded: bool = False

    @property
    def gt_stated(self) -> bool:
        return self.gt_source != "default"

    def protocol(self) -> dict:
        return {"gt_fps": self.gt_fps, "gt_fps_source": self.gt_source,
                "fps_source": self.fps_source}


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


def resolve_rates(gt_dir, pred_dir, gt_fps: float | None = None, fps: float | None = None) -> Rates:
    """Rates from the flags, else the fps.json files, else the defaults; a flag that contradicts a
    recorded rate is an error."""
    for name, v in (("--gt-fps", gt_fps), ("--fps", fps)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise SurgflowError(f"{name} must be a positive number of frames per second, got {v}")
    gdir = Path(gt_dir)
    g_rec = read_fps_sidecar(gdir)
    p_rec = read_fps_sidecar(pred_dir)
    g_file, p_file = Path(gdir) / FPS_SIDECAR, Path(pred_dir) / FPS_SIDECAR
    if fps is not None and p_rec is not None and not _same(fps, p_rec):
        raise SurgflowError(f"--fps {fps:g} contradicts {p_file} (predictions written at {p_rec:g} "
                            f"fps); drop --fps to score at the recorded rate")
    if gt_fps is not None and g_rec is not None and not _same(gt_fps, g_rec):
        raise SurgflowError(f"--gt-fps {gt_fps:g} contradicts {g_file} (ground truth written at "
                            f"{g_rec:g} fps); drop --gt-fps to use the recorded rate")
    if fps is not None:
        f, f_src = float(fps), "--fps"
    elif p_rec is not None:
        f, f_src = p_rec, f"recorded in {p_file}"
    else:
        f, f_src = DEFAULT_FPS, "default"
    if gt_fps is not None:
        g, g_src = float(gt_fps), "--gt-fps"
    elif g_rec is not None:
        g, g_src = g_rec, f"recorded in {g_file}"
    else:
        g, g_src = DEFAULT_GT_FPS, "default"
    return Rates(g, f, g_src, f_src, pred_recorded=p_rec is not None)


def kept_rows(path, frames: np.ndarray, rates: Rates, step: int) -> np.ndarray:
    """Mask of the ground-truth rows at the evaluation rate; an error when the kept rows are
    sparser than that rate (the file's rows are slower than --fps claims)."""
    keep = subsample(frames, step)
    kept = np.asarray(frames)[keep]
    if kept.size >= 2:
        spacing = int(np.median(np.diff(kept)))
        if spacing > step:
            row_fps = rates.gt_fps / spacing
            raise SurgflowError(
                f"{path}: the rows are {spacing} frames apart at {rates.gt_fps:g} fps ({rates.gt_source}"
                f"), i.e. {row_fps:g} row(s) per second, but scoring at {rates.fps:g} fps "
                f"({rates.fps_source}) needs one row every {step} frame(s); pass --fps {row_fps:g} "
                f"(Cholec80 tool annotations have one row per second)")
    return keep


def pred_at_rate(video: str, pred_frames: np.ndarray, pred: np.ndarray, gt_rows: int,
                  kept_rows: int, rates: Rates, step: int, subsampled: list[str]) -> np.ndarray:
    """A prediction with one row per raw ground-truth row (when the ground truth is subsampled):
    subsampled like it when the ground-truth rate was stated or recorded; refused when it is only
    the default (the pair is ambiguous); left alone when the prediction's rate is recorded."""
    if step == 1 or kept_rows == gt_rows or len(pred) != gt_rows or rates.pred_recorded:
        return pred
    if not rates.gt_stated:
        raise SurgflowError(
            f"{video}: the prediction has as many rows ({gt_rows}) as the ground truth, and no "
            f"{FPS_SIDECAR} records either rate: both may be at the evaluation rate or both at "
            f"{rates.gt_fps:g} fps. Pass --gt-fps {rates.fps:g} if the ground truth is already at "
            f"{rates.fps:g} fps (files written by surgflow eval), or --gt-fps {rates.gt_fps:g} to "
            f"subsample both to {rates.fps:g} fps")
    subsampled.append(video)
    return pred[subsample(pred_frames, step)]


def _whole_rate(x: float, n: int) -> int | None:
    """`x` (a rate implied by two row counts) as a whole number of frames per second when it is
    one up to the rounding of a video's last frames (2 % + 2 rows of the shorter file), else None."""
    r = int(round(x))
    if r < 1 or abs(x - r) > r * (0.02 + 2.0 / max(n, 1)):
        return None
    return r


def rate_mismatch(video: str, n_raw: int, n_gt: int, n_pred: int, rates: Rates) -> str | None:
    """Why ground truth and prediction lengths that differ by about a frame-rate factor (not a few
    frames) are a rate mistake, naming the flag and value that align them; None when the lengths
    do not signal one. n_raw: ground-truth rows in the file; n_gt: kept at the evaluation rate.

    Two readings are tried: the predictions are at another rate (f = fps * n_pred / n_gt, e.g.
    5-fps rows scored as 1 fps: 193/39 = 5), or the ground truth is (g = fps * n_raw / n_pred, e.g.
    1-fps AutoLaparo rows read at the default 25 fps). A rate recorded in fps.json is trusted, a
    default is questioned before a flag."""
    if min(n_gt, n_pred, n_raw) < 1 or n_gt == n_pred:
        return None
    f_exact, g_exact = rates.fps * n_pred / n_gt, rates.fps * n_raw / n_pred
    f = _whole_rate(f_exact, min(n_gt, n_pred))
    g = _whole_rate(g_exact, min(n_raw, n_pred))
    options = []  # (rank, text): unstated (default) rates first, then flags; recorded never
    rank = {"default": 0, "--fps": 1, "--gt-fps": 1}
    fps_ok = (f is not None and rates.fps_source in rank and max(f, rates.fps) / min(f, rates.fps) >= 1.5
              and f <= rates.gt_fps and math.isclose(rates.gt_fps / f, round(rates.gt_fps / f)))
    gt_ok = (g is not None and rates.gt_source in rank and max(g, rates.gt_fps) / min(g, rates.gt_fps) >= 1.5
             and g >= rates.fps and math.isclose(g / rates.fps, round(g / rates.fps)))
    gt_from = "the default" if rates.gt_source == "default" else rates.gt_source
    fps_from = "the default" if rates.fps_source == "default" else rates.fps_source
    if fps_ok:
        options.append((rank[rates.fps_source] - (n_pred > n_gt) * 0.5,
                        f"{n_pred}/{n_gt} = {f_exact:.3g} ~ {f / rates.fps:g} prediction rows per "
                        f"evaluated frame: the predictions look like {f:g}-fps rows, not {rates.fps:g} "
                        f"fps ({fps_from}): pass `--fps {f:g}`"))
    if gt_ok:
        options.append((rank[rates.gt_source],
                        f"{n_raw}/{n_pred} = {n_raw / n_pred:.3g} ~ {g / rates.fps:g} ground-truth "
                        f"row(s) per prediction row at {rates.fps:g} fps: the ground truth looks "
                        f"like {g:g}-fps rows, not {rates.gt_fps:g} fps ({gt_from}): pass "
                        f"`--gt-fps {g:g}`"))
    if not options:
        return None
    options.sort(key=lambda o: o[0])
    text = options[0][1]
    if len(options) > 1:
        text += f" (or, if the other file is the one at another rate: {options[1][1].rsplit(': ', 1)[1]})"
    return (f"{video}: the ground truth has {n_gt} frames at the evaluation rate ({n_raw} rows "
            f"read as {rates.gt_fps:g} fps, scored at {rates.fps:g} fps), the prediction {n_pred}: "
            f"the lengths differ by a frame-rate factor, not a few frames; {text}")


def check_rate_lengths(video: str, n_raw: int, n_gt: int, n_pred: int, rates: Rates,
                       truncate: bool, notes: list[str] | None = None) -> None:
    """Refuse lengths that signal a rate mismatch (rate_mismatch), with or without --truncate:
    truncating would score misaligned frames. Only when both rates are stated on the command line
    (--gt-fps and --fps) does --truncate score the common prefix, with a note."""
    msg = rate_mismatch(video, n_raw, n_gt, n_pred, rates)
    if msg is None:
        return
    if truncate and rates.gt_source == "--gt-fps" and rates.fps_source == "--fps":
        if notes is not None:
            notes.append(f"{msg.split(': the lengths')[0]}: lengths differ by a rate factor; "
                         f"truncated as asked (both rates stated)")
        return
    if truncate:
        msg += ("; --truncate refuses it, since the common prefix would pair frames of different "
                "times (state both --gt-fps and --fps to confirm the rates)")
    raise SurgflowError(msg)


def note_subsampled(notes: list[str] | None, videos: list[str], step: int) -> None:
    if videos and notes is not None:
        notes.append(f"predictions with one row per ground-truth row were subsampled like the "
                     f"ground truth (every {step}th row): {', '.join(videos)}")
