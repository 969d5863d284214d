"""`surgflow view`: one self-contained HTML page to browse a split's predictions against the truth.

Input: evaluation folders written by `surgflow eval` (scores.json, predictions/, ground_truth/),
one per run; two or more are shown side by side on the videos they share, on one time axis.
Output folder: `index.html` (CSS, JavaScript and data inlined: it opens from disk, file://, with no
server and no network) and `frames/<video>/<i:06d>.jpg`, downscaled JPEG thumbnails of the frames
the model saw (the prepared store), or of the source video with `source=`.
The JavaScript and CSS ship as package data beside this file (viewer.js, viewer.css).
"""
from __future__ import annotations

import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from surgflow.checkpoint_io import load_checkpoint
from surgflow.data.annotations import parse_phase_file
from surgflow.data.store import PreparedDataset
from surgflow.data.video import sample_frames
from surgflow.evaluation import files
from surgflow.evaluation.phase_metrics import confusion_matrix
from surgflow.evaluation.plots import phase_colors
from surgflow.evaluation.relaxed import segments
from surgflow.evaluation.score import evaluation_of, task_names
from surgflow.io_utils import (SurgflowError, atomic_write_bytes, atomic_write_json, atomic_write_text,
                               json_safe, progress)
from surgflow.outputs import check_writable_dir
from surgflow.runs import resolve_checkpoint_path

PROB_SUFFIX = "-phase_prob.txt"  # eval's per-frame phase probabilities (Frame + one column per phase)
FRAME_NAME = "{:06d}.jpg"
# 8 Cholec80 test videos at 1 fps (~19,000 frames) at the defaults (320 px wide, JPEG 70) measure
# ~9 kB a frame on a natural photo: ~175 MB; above this the log says how to shrink it
SIZE_BUDGET = 200e6
HERE = Path(__file__).parent


@dataclass
class EvalRun:
    """One evaluation folder read back: labels are per frame of the video, -1 where absent."""
    name: str
    path: Path
    scores: dict
    phase_names: list[str]
    videos: list[str]
    gt: dict = field(default_factory=dict)          # video -> int64 [N'] (-1: unlabelled)
    pred: dict = field(default_factory=dict)        # video -> int64 [N'] (-1: no row)
    prob: dict = field(default_factory=dict)        # video -> float [N, P] (absent: not recorded)
    ant_pred: dict = field(default_factory=dict)    # video -> float [N, I] minutes
    ant_gt: dict = field(default_factory=dict)      # video -> float [N, I] minutes
    instruments: list[str] = field(default_factory=list)
    horizon: Optional[float] = None
    fps: float = 1.0
    data_root: Optional[str] = None
    split: str = "all"
    non_causal: bool = False


def _scores_file(folder: Path) -> Path:
    for name in ("scores.json", "NONCAUSAL_scores.json"):
        if (folder / name).is_file():
            return folder / name
    raise SurgflowError(f"{folder}: no scores.json; give an evaluation folder written by `surgflow "
                        f"eval` (RUN/eval_test) or a run folder")


def _dense(frames: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    out = np.full(max(n, int(frames.max()) + 1 if len(frames) else 0), -1, dtype=np.int64)
    out[frames] = ids
    return out


def _run_meta(run_dir: str) -> dict:
    """The checkpoint meta of the evaluated run (data root, split), {} when unreadable."""
    try:
        return dict(load_checkpoint(resolve_checkpoint_path(run_dir)).get("meta") or {})
    except (SurgflowError, OSError, RuntimeError, ValueError):
        return {}


def load_eval(folder, name: Optional[str] = None) -> EvalRun:
    """Read an evaluation folder (ARCHITECTURE.md "Prediction files") into an EvalRun."""
    folder = Path(folder)
    path = _scores_file(folder)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SurgflowError(f"{path}: unreadable ({e}); re-run surgflow eval") from None
    scores = doc.get("scores", {})
    pred_dir, gt_dir = folder / "predictions", folder / "ground_truth"
    mapping = gt_dir / "mapping.txt"
    if "phase" not in scores or not mapping.is_file():
        raise SurgflowError(f"{folder}: no phase scores or {mapping} missing; the viewer needs the "
                            f"phase task; re-run `surgflow eval` on a run that predicts phases")
    phase_names = [ln.split(" ", 1)[1] for ln in mapping.read_text().splitlines() if " " in ln]
    run_dir = str(doc.get("run") or "")
    if not name:
        run = Path(run_dir)
        if run.suffix == ".pt":  # evaluated from a checkpoint file: RUN/checkpoints/x.pt
            run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
        base = run.name if run_dir else folder.name
        # RUN/eval_test -> "RUN"; any other folder keeps its own name beside the run's
        plain = folder.name.startswith("eval_") or folder.name == base or not run_dir
        name = base if plain else f"{base}/{folder.name}"
    er = EvalRun(name=name, path=folder, scores=scores, phase_names=phase_names,
                 videos=sorted(scores["phase"]["per_video"]), non_causal=bool(doc.get("NON-CAUSAL")))
    er.fps = float(json.loads((pred_dir / files.FPS_SIDECAR).read_text())["fps"]) \
        if (pred_dir / files.FPS_SIDECAR).is_file() else float(scores["phase"]["protocol"].get("fps", 1.0))
    meta = {} if doc.get("data_root") else _run_meta(run_dir) if run_dir else {}
    er.data_root = doc.get("data_root") or meta.get("dataset_root") or None
    er.split = str(doc.get("data_split") or meta.get("split") or "all")
    for v in er.videos:
        gf, g = parse_phase_file(gt_dir / f"{v}-phase.txt", phase_names, what="phase ground-truth")
        pf, p = parse_phase_file(pred_dir / f"{v}-phase.txt", phase_names, what="phase prediction")
        n = max(int(gf.max()) + 1 if len(gf) else 0, int(pf.max()) + 1 if len(pf) else 0)
        er.gt[v], er.pred[v] = _dense(gf, g, n), _dense(pf, p, n)
        if (pred_dir / f"{v}{PROB_SUFFIX}").is_file():
            er.prob[v] = files.read_table(pred_dir / f"{v}{PROB_SUFFIX}", phase_names, "phase probability")[1]
    if "anticipation" in scores:
        proto = scores["anticipation"]["protocol"]
        er.instruments, er.horizon = list(proto["instruments"]), float(proto["horizon"])
        gts, preds = files.load_anticipation_dirs(gt_dir, pred_dir, er.instruments, er.horizon,
                                                  videos=",".join(er.videos))
        er.ant_gt, er.ant_pred = gts, preds
    return er


def resolve_input(path, split: str = "test") -> Path:
    """An evaluation folder as it is; a run folder -> its eval_<split>/ (an error says how to make it)."""
    path = Path(path)
    if not path.exists():
        raise SurgflowError(f"{path}: not found; give a run folder or an evaluation folder")
    if any((path / n).is_file() for n in ("scores.json", "NONCAUSAL_scores.json")):
        return path
    cand = path / f"eval_{split}"
    if (cand / "scores.json").is_file():
        return cand
    if (path / "checkpoints").is_dir() or path.suffix == ".pt":
        raise SurgflowError(f"{cand}: not found; evaluate the run first: `surgflow eval {path} "
                            f"--split {split}` (or pass its --out folder)")
    raise SurgflowError(f"{path}: neither a run folder (checkpoints/) nor an evaluation folder "
                        f"(scores.json)")


# ---------------------------------------------------------------- frames

def _thumb_size(hw: tuple[int, int], width: int) -> tuple[int, int]:
    h, w = hw
    if w <= width:
        return h, w
    return max(2, round(h * width / w)), width


def _encode(img: np.ndarray, size: tuple[int, int], quality: int) -> bytes:
    im = Image.fromarray(img)
    if (im.height, im.width) != size:
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _source_video(entry: dict, video: str, source: Path) -> Path:
    """The raw video of `video`: its recorded path if it is under or equal to `source`, else the same
    file name under `source` (the dataset moved)."""
    rec = Path(str((entry.get("source") or {}).get("video") or ""))
    source = source.resolve()
    cands = [rec] if rec.name and rec.is_file() and source in rec.resolve().parents else []
    if rec.name:
        cands += [source / rec.name, source / "videos" / rec.name]
    cands += sorted(source.glob(f"{video}.*")) + sorted(source.glob(f"videos/{video}.*"))
    for c in cands:
        if c.is_file():
            return c
    raise SurgflowError(f"--source {source}: no video file for {video} (looked for "
                        f"{rec.name or video + '.*'} in it and in its videos/ folder); give the raw "
                        f"dataset folder the store was prepared from, or leave --source out")


def write_frames(out: Path, root, videos: Sequence[str], lengths: dict, width: int = 320,
                 quality: int = 70, source=None) -> dict:
    """JPEG thumbnails frames/<video>/<i>.jpg of the frames at the evaluation rate; a folder whose
    stamp (done.json) matches is kept. -> {video: {"dir", "size" [H, W], "count"}}."""
    ds = PreparedDataset(root)
    entries = ds.manifest.get("videos", {})
    missing = [v for v in videos if entries.get(v, {}).get("status") != "done"]
    if missing:
        raise SurgflowError(f"{root}: prepared dataset has no video {', '.join(missing)}; pass "
                            f"--data-root (the store the run was evaluated on)")
    info = {}
    for v in progress(videos, desc="view frames", unit="video"):
        n = min(int(lengths[v]), ds.num_frames(v))
        size = _thumb_size(ds.size, width)
        folder = out / "frames" / v
        stamp = {"root": str(Path(root).resolve()), "source": str(source or ""), "frames": n,
                 "size": list(size), "quality": quality,
                 "checksum": entries[v].get("checksum")}
        done = folder / "done.json"
        if not (done.is_file() and json.loads(done.read_text()) == stamp):
            if source is None:
                for start in range(0, n, 256):
                    for i, img in enumerate(ds.read_frames(v, start, min(n, start + 256)), start):
                        atomic_write_bytes(folder / FRAME_NAME.format(i), _encode(img, size, quality))
            else:
                path = _source_video(entries[v], v, Path(source))
                got = 0
                for i, img in sample_frames(path, ds.fps, size):
                    if i >= n:
                        break
                    atomic_write_bytes(folder / FRAME_NAME.format(i), _encode(img, size, quality))
                    got = i + 1
                if got < n:
                    raise SurgflowError(f"{path}: gave {got} frames at {ds.fps:g} fps, the store "
                                        f"{n}; use the video the store was prepared from")
            atomic_write_json(done, stamp)
        info[v] = {"dir": f"frames/{v}", "size": list(size), "count": n}
    return info


# ---------------------------------------------------------------- page data

def _weakest(gt: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> Optional[list]:
    """[phase, F1 %] of the ground-truth phase with the lowest F1 in this video."""
    cm = confusion_matrix(gt, pred, len(names))  # gt, pred: int [N] of one length; gt -1 dropped
    in_gt = np.flatnonzero(cm.sum(1) > 0)
    if not in_gt.size:
        return None
    denom = cm.sum(1) + cm.sum(0)
    f1 = 200.0 * np.diag(cm)[in_gt] / denom[in_gt]  # 2 tp / (gt + predicted frames)
    worst = int(np.argmin(f1))  # the first phase on a tie
    return [names[in_gt[worst]], round(float(f1[worst]), 1)]


def _num(x, digits=2):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), digits)


def _segments(labels: np.ndarray) -> list[list[int]]:
    """[[start, stop, id], ...]: runs of one label over consecutive frames (-1 runs dropped)."""
    lab, starts, ends = segments(np.asarray(labels))
    return [[int(a), int(b), int(c)] for c, a, b in zip(lab, starts, ends) if c >= 0]


def build_data(runs: Sequence[EvalRun], frames: dict, title: str) -> dict:
    first = runs[0]
    names = first.phase_names
    videos = [v for v in first.videos if all(v in r.videos for r in runs[1:])]
    colors = ["#%02x%02x%02x" % tuple(int(255 * c) for c in rgba[:3]) for rgba in phase_colors(len(names))]
    data = {"title": title, "fps": first.fps, "phase_names": names, "phase_colors": colors,
            "instruments": first.instruments, "horizon": first.horizon, "runs": [], "videos": []}
    registered = set(task_names())
    columns = []  # per run: every scored task's viewer columns, tasks in score order
    for r in runs:
        ph = r.scores["phase"]
        columns.append([{**c, "task": t, "mean": _num(c["mean"], 3), "std": _num(c["std"], 3)}
                           for t in r.scores if t in registered
                           for c in evaluation_of(t).viewer_columns(r.scores[t])])
        data["runs"].append({
            "name": r.name, "path": str(r.path), "non_causal": r.non_causal,
            "summary": [{k: c[k] for k in ("label", "digits", "mean", "std")} for c in columns[-1]],
            "per_phase": {n: {m: _num(ph["per_phase"][n][m], 1) for m in ("precision", "recall", "f1")}
                          for n in names if n in ph["per_phase"]},
            "confusion": ph["confusion"],
            "has_prob": all(v in r.prob for v in videos), "has_ant": bool(r.ant_pred)})
    for v in videos:
        n = max(len(first.gt[v]), frames.get(v, {}).get("count", 0),
                *(len(r.pred[v]) for r in runs), *(len(r.prob.get(v, ())) for r in runs))
        gt = np.full(n, -1, dtype=np.int64)
        gt[:len(first.gt[v])] = first.gt[v]
        entry = {"name": v, "n": n, "frames": frames.get(v), "gt": gt.tolist(),
                 "gt_segments": _segments(gt), "runs": []}
        if first.ant_gt.get(v) is not None:
            entry["ant_gt"] = np.round(first.ant_gt[v].T, 3).tolist()  # [I][N] minutes
        for r, cols in zip(runs, columns):
            pred = np.full(n, -1, dtype=np.int64)
            pred[:len(r.pred[v])] = r.pred[v]
            rec = {"pred": pred.tolist(), "segments": _segments(pred),
                   "metrics": [_num(r.scores[c["task"]].get("per_video", {}).get(v, {}).get(c["key"]),
                                    c["digits"]) for c in cols],
                   "weakest": _weakest(gt, pred, names)}
            if v in r.prob:  # [P][N] as integer percent: a small page
                rec["prob"] = np.rint(100 * np.clip(r.prob[v].T, 0, 1)).astype(int).tolist()
            if v in r.ant_pred:
                rec["ant"] = np.round(r.ant_pred[v].T, 3).tolist()
            entry["runs"].append(rec)
        data["videos"].append(entry)
    return data


def render_html(data: dict) -> str:
    css = (HERE / "viewer.css").read_text()
    js = (HERE / "viewer.js").read_text()
    # "<" escaped: no "</script>" or "<!--" can end the data block early
    blob = json.dumps(json_safe(data), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(data['title'])}</title>\n<style>\n{css}\n</style></head>\n<body>\n"
            "<div id=\"app\">loading...</div>\n"
            f"<script type=\"application/json\" id=\"surgflow-data\">{blob}</script>\n"
            f"<script>\n{js}\n</script>\n</body></html>\n")


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_view(inputs: Sequence, out=None, split: str = "test", data_root=None, source=None,
               frame_width: int = 320, quality: int = 70, names: Optional[Sequence[str]] = None,
               log=print) -> dict:
    """Write the viewer page for one or more evaluation (or run) folders.
    -> {"html": path, "out": dir, "bytes": total size, "frames": count, "videos": [...]}."""
    t0 = time.time()
    if not inputs:
        raise SurgflowError("give at least one run or evaluation folder")
    if not 16 <= int(frame_width) <= 4096:
        raise SurgflowError(f"--frame-width {frame_width}: give 16..4096 pixels")
    if not 1 <= int(quality) <= 95:
        raise SurgflowError(f"--quality {quality}: give a JPEG quality in 1..95")
    folders = [resolve_input(p, split) for p in inputs]
    runs = [load_eval(f, (names or [None] * len(folders))[k]) for k, f in enumerate(folders)]
    base = runs[0]
    for r in runs[1:]:
        if r.phase_names != base.phase_names:
            raise SurgflowError(f"{r.path}: phases {r.phase_names} differ from {base.path}'s "
                                f"{base.phase_names}; side by side needs one vocabulary")
        if abs(r.fps - base.fps) > 1e-9:
            raise SurgflowError(f"{r.path}: evaluated at {r.fps:g} fps, {base.path} at {base.fps:g}; "
                                f"side by side needs one time axis (re-evaluate at one rate)")
    shared = [v for v in base.videos if all(v in r.videos for r in runs[1:])]
    if not shared:
        raise SurgflowError(f"{', '.join(str(r.path) for r in runs)}: no video in common")
    if len(runs) > 1 and len(shared) < len(base.videos):
        log(f"[view] {len(shared)} video(s) in every run, {len(base.videos) - len(shared)} left out")
    out = Path(out) if out is not None else base.path / "view"
    out = check_writable_dir(out, "viewer folder", "--out")
    root = data_root or base.data_root
    if not root or not (Path(root) / "manifest.json").is_file():
        raise SurgflowError(f"{root or base.path}: the prepared dataset behind the frames is not found "
                            f"({'not recorded' if not root else 'gone or moved'}); pass --data-root "
                            f"PREPARED_DIR")
    lengths = {v: len(base.gt[v]) for v in shared}
    for r in runs:
        for v in shared:
            lengths[v] = max(lengths[v], len(r.pred[v]), len(r.prob.get(v, ())))
    frames = write_frames(out, root, shared, lengths, frame_width, quality, source)
    title = "surgflow view: " + " vs ".join(r.name for r in runs)
    data = build_data(runs, frames, title)
    data["frames_from"] = f"source videos {source}" if source else f"prepared store {root}"
    page = out / "index.html"
    atomic_write_text(page, render_html(data))
    total = _folder_size(out)
    count = sum(f["count"] for f in frames.values())
    log(f"[view] wrote {page}: {len(shared)} video(s), {count} frames, "
        f"{total / 1e6:.1f} MB in all (page {page.stat().st_size / 1e6:.2f} MB, frames "
        f"{(total - page.stat().st_size) / max(count, 1) / 1e3:.1f} kB each), "
        f"{time.time() - t0:.0f} s; open it in a browser (no server needed)")
    if total > SIZE_BUDGET:
        log(f"[view] note: {total / 1e6:.0f} MB is over {SIZE_BUDGET / 1e6:.0f} MB; smaller with "
            f"--frame-width (now {frame_width}) or --quality (now {quality})")
    return {"html": str(page), "out": str(out), "bytes": total, "frames": count, "videos": shared}
