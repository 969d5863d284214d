"""Scoring drivers shared by `surgflow score` and `surgflow eval`.

Each task's evaluation (TaskEvaluation below: validation metrics, prediction files, scorer,
table, per-video columns, diagnostics, plots) is named by its Task class (`Task.evaluation`,
models/tasks.py) and found with `evaluation_of(name)`; callers loop over them and never name a task.
Each driver takes {video: array} dictionaries at the evaluation fps, computes every metric family
of its task and returns a JSON-ready dict with a `protocol` block that states what was averaged
over what (videos, fps, class set of the macro mean, relaxed variant, the axis of every std).
Numbers are percent for phase and tools, minutes for anticipation. `format_table` renders the same
dict as aligned text; with a `label` (eval passes the split name) every line starts with it.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from surgflow.evaluation import (anticipation_metrics, files, phase_metrics, plots as plots_mod,
                                 relaxed as relaxed_mod, segment_metrics, tool_metrics)
from surgflow.evaluation.diagnostics import format_diagnostics, phase_diagnostics
from surgflow.evaluation.files import compact_names
from surgflow.io_utils import SurgflowError, atomic_write_json, atomic_write_text
from surgflow import labels
from surgflow.data.annotations import parse_mapping
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES
from surgflow.registry import TASKS

NON_CAUSAL_NOTE = ("NON-CAUSAL: the model ran in train mode (BatchNorm used batch statistics, which "
                   "include future frames); these numbers are not valid online results")


def _pct(x: float) -> float:
    return float(x) * 100.0


def _ms(d: Mapping, scale: float = 100.0) -> dict:
    return {"mean": d["mean"] * scale, "std": d["std"] * scale}


def _base_protocol(task: str, videos: Sequence[str], fps: float, label: str | None,
                   non_causal: bool, notes: Sequence[str] | None, frames: int,
                   extra: Mapping | None = None) -> dict:
    p = {"task": task, "split": label, "videos": list(videos), "num_videos": len(videos),
         "num_frames": int(frames), "fps": fps}
    p.update(extra or {})  # where the rates came from, the --videos selection
    if non_causal:
        p["NON-CAUSAL"] = True
        p["non_causal_note"] = NON_CAUSAL_NOTE
    p["notes"] = list(notes or [])
    return p


def _check_pairs(gt: Mapping, pred: Mapping) -> list[str]:
    if set(gt) != set(pred):
        only_gt = sorted(set(gt) - set(pred))
        only_pred = sorted(set(pred) - set(gt))
        raise SurgflowError(f"videos differ between ground truth and predictions; only in ground "
                            f"truth: {', '.join(only_gt) or '-'}; only in predictions: "
                            f"{', '.join(only_pred) or '-'}")
    for v in gt:
        if len(gt[v]) != len(pred[v]):
            raise SurgflowError(f"{v}: ground truth has {len(gt[v])} frames, prediction "
                                f"{len(pred[v])}; align them (or --truncate on the command line)")
    if not gt:
        raise SurgflowError("no videos to score")
    return sorted(gt)


# ---------------------------------------------------------------- phase

def score_phase(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                phase_names: Sequence[str], fps: float, relaxed: str | None = None,
                gt_only: bool = False, label: str | None = None, non_causal: bool = False,
                notes: Sequence[str] | None = None, protocol_extra: Mapping | None = None) -> dict:
    """Every phase metric family on {video: int [N]} ground truth and predictions (0-based ids)."""
    videos = _check_pairs(gt, pred)
    gt = {v: np.asarray(gt[v], dtype=np.int64) for v in videos}
    pred = {v: np.asarray(pred[v], dtype=np.int64) for v in videos}
    c = len(phase_names)
    vw = phase_metrics.videowise(gt, pred, c, gt_only)
    pp = phase_metrics.per_phase(vw["confusions"])
    frame = phase_metrics.frame_pooled(gt, pred, c, gt_only)
    seg = segment_metrics.segment_scores(gt, pred)
    class_set = ("ground truth only" if gt_only else
                 "ground truth union prediction (a phase predicted but absent from the ground "
                 "truth scores 0)")
    protocol = _base_protocol("phase", videos, fps, label, non_causal, notes,
                              sum(int((gt[v] >= 0).sum()) for v in videos), protocol_extra)
    protocol.update({
        "units": "percent",
        "phases": list(phase_names),
        "macro_phases": class_set,
        "zero_division": "0 (a ground-truth phase never predicted has precision 0)",
        "averaging": {
            "video": "per video: accuracy and macro precision/recall/jaccard/f1 over the macro "
                     "phase set; then mean over videos",
            "per_phase": "per video and phase, then mean over the videos whose ground truth "
                         "contains the phase; per_phase_mean = mean over phases",
            "frame": "all frames of all videos pooled, then macro over the pooled phase set",
            "segments": "edit: mean over videos; F1@k: TP/FP/FN summed over videos (MS-TCN)",
        },
        "relaxed": relaxed or "none",
        "std_axis": {
            "video": "videos (sample std, ddof=1)",
            "per_phase": "videos containing the phase (sample std, ddof=1)",
            "per_phase_mean": "phases (sample std, ddof=1)",
            "segments.edit_std": "videos (sample std, ddof=1)",
        },
        "unlabelled_frames": "frames whose ground truth is -1 are excluded",
    })
    res = {
        "task": "phase",
        "label": label,
        "protocol": protocol,
        "video": {m: _ms(vw["summary"][m]) for m in phase_metrics.METRICS},
        "per_phase": {},
        "per_phase_mean": {m: _ms(pp["summary"][m]) for m in phase_metrics.CLASS_METRICS},
        "frame": {m: _pct(frame[m]) for m in phase_metrics.METRICS},
        "segments": seg,
        "per_video": {v: {m: _pct(vw["per_video"][v][m]) for m in phase_metrics.METRICS}
                      for v in videos},
    }
    for v in videos:  # which phases entered this video's macro mean
        cm = vw["confusions"][v]
        used = cm.sum(1) > 0 if gt_only else (cm.sum(1) > 0) | (cm.sum(0) > 0)
        res["per_video"][v]["macro_phases"] = [phase_names[i] for i in np.flatnonzero(used)]
        res["per_video"][v]["frames"] = int(cm.sum())
    for i, name in enumerate(phase_names):
        entry = {m: _pct(pp["phases"][m]["mean"][i]) for m in phase_metrics.CLASS_METRICS}
        entry["videos"] = int(pp["phases"]["precision"]["n"][i])
        entry["std"] = {m: _pct(pp["phases"][m]["std"][i]) for m in phase_metrics.CLASS_METRICS}
        res["per_phase"][name] = entry
    if relaxed:
        res["relaxed"] = _relaxed_block(relaxed, gt, pred, fps, phase_names, gt_only)

        if list(phase_names) != list(CHOLEC80_PHASES):
            protocol["notes"].append("relaxed boundaries use the Cholec80 script's phase-pair rules "
                                     "(ids 4-7); they are not defined for this phase vocabulary")
        protocol["std_axis"]["relaxed"] = res["relaxed"]["std_axis"]
    res["confusion"] = sum(vw["confusions"].values()).tolist()
    return res


def _relaxed_block(variant: str, gt, pred, fps, phase_names, gt_only) -> dict:
    c = len(phase_names)
    window = relaxed_mod.window_frames(fps)
    if variant == "published":
        r = relaxed_mod.published(gt, pred, fps, c)
        block = {
            "variant": "published",
            "description": "Cholec80/M2CAI MATLAB script reproduced exactly, bugs included "
                           "(early-transition window lands on the start of each segment, TP "
                           "counted over pred-or-gt frames, values clipped at 100)",
            "window_frames": window,
            "accuracy": dict(r["accuracy"]),
            "per_phase": {},
            "std_axis": {"accuracy": "videos", "jaccard": "phases", "precision": "phases",
                         "recall": "phases", "per_phase": "videos (nanstd)"},
            "phase_mean": {"jaccard": "mean over phases", "precision": "nanmean over phases",
                           "recall": "mean over phases"},
        }
        for m in ("jaccard", "precision", "recall"):
            block[m] = {"mean": r[m]["mean"], "std": r[m]["std"]}
        for i, name in enumerate(phase_names):
            block["per_phase"][name] = {m: float(r[m]["per_phase_mean"][i])
                                        for m in ("jaccard", "precision", "recall")}
        return block
    if variant == "corrected":
        r = relaxed_mod.corrected(gt, pred, fps, c, gt_only)
        block = {
            "variant": "corrected",
            "description": "intended windows (late: first t frames, early: last t frames of each "
                           "ground-truth segment, same pair rules); relaxed frames take the ground-"
                           "truth label, then the video-wise protocol",
            "window_frames": window,
            "video": {m: _ms(r["videowise"]["summary"][m]) for m in phase_metrics.METRICS},
            "per_phase": {},
            "std_axis": {"video": "videos", "per_phase": "videos containing the phase"},
        }
        for i, name in enumerate(phase_names):
            block["per_phase"][name] = {m: _pct(r["per_phase"]["phases"][m]["mean"][i])
                                        for m in phase_metrics.CLASS_METRICS}
        return block

    raise SurgflowError(f"--relaxed must be one of {relaxed_mod.VARIANTS}, got {variant!r}")


# ---------------------------------------------------------------- tools

def score_tools(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                tool_names: Sequence[str], fps: float = 1.0, label: str | None = None,
                non_causal: bool = False, notes: Sequence[str] | None = None,
                protocol_extra: Mapping | None = None) -> dict:
    """AP per tool and mAP (frame-pooled) on {video: [N, K]} targets (0/1) and scores."""
    videos = _check_pairs(gt, pred)
    r = tool_metrics.tool_ap({v: gt[v] for v in videos}, {v: pred[v] for v in videos}, tool_names)
    per_video = {}
    for v in videos:
        rv = tool_metrics.tool_ap({v: gt[v]}, {v: pred[v]}, tool_names)
        per_video[v] = {"frames": len(gt[v]), "mAP": _pct(rv["map"]),
                        "tools": {n: _pct(a) for n, a in rv["ap"].items()}}
    protocol = _base_protocol("tools", videos, fps, label, non_causal, notes,
                              sum(len(gt[v]) for v in videos), protocol_extra)
    protocol.update({
        "units": "percent",
        "tools": list(tool_names),
        "averaging": "frame-pooled: all frames of all videos concatenated, AP per tool "
                     "(step-wise, as sklearn average_precision_score), mAP = mean over tools "
                     "with at least one positive frame",
        "per_video": "the same AP and mAP over the frames of each video alone",
        "std_axis": {},
    })
    return {"task": "tools", "label": label, "protocol": protocol,
            "tools": {n: _pct(a) for n, a in r["ap"].items()}, "mAP": _pct(r["map"]),
            "per_video": per_video}


# ---------------------------------------------------------------- anticipation

WMAE_DESCRIPTION = {
    "per_instrument": "per_instrument (MICCAI 2020; not the BN-pitfalls meter): wMAE = (inMAE + "
                      "outMAE) / 2 per instrument, "
                      "mean wMAE = nanmean over instruments of those (an instrument without "
                      "in-horizon or out-of-horizon frames drops out)",
    "pitfalls_bn": "pitfalls_bn (BN-pitfalls code's meter): mean wMAE = (mean inMAE + mean outMAE) / "
                   "2, each a nanmean over instruments",
}


def score_anticipation(gt: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                       instruments: Sequence[str], horizon: float, fps: float = 1.0,
                       per_video: bool = False, label: str | None = None,
                       non_causal: bool = False, notes: Sequence[str] | None = None,
                       clip: bool = False, wmae: str = "per_instrument",
                       protocol_extra: Mapping | None = None) -> dict:
    """inMAE ... mMAE and MAE per instrument and their mean (minutes) on {video: [N, I]} minutes."""
    if not (math.isfinite(float(horizon)) and float(horizon) > 0):
        raise SurgflowError(f"the horizon must be a positive number of minutes, got {horizon}")
    if wmae not in anticipation_metrics.WMAE_CONVENTIONS:
        raise SurgflowError(f"--wmae must be one of {', '.join(anticipation_metrics.WMAE_CONVENTIONS)}"
                            f", got {wmae!r}")
    videos = _check_pairs(gt, pred)
    pooling = "videos" if per_video else "frames"
    r = anticipation_metrics.anticipation_scores({v: gt[v] for v in videos},
                                                 {v: pred[v] for v in videos},
                                                 instruments, horizon, pooling, fps=fps, clip=clip,
                                                 wmae=wmae)
    protocol = _base_protocol("anticipation", videos, fps, label, non_causal, notes,
                              sum(len(gt[v]) for v in videos), protocol_extra)
    h = float(horizon)
    protocol.update({
        "units": "minutes",
        "horizon": h,
        "instruments": list(instruments),
        "pooling": ("per instrument over all frames of all videos pooled" if not per_video else
                    "per instrument and video, then mean over the videos where defined"),
        "averaging": "mean = nanmean over instruments; frames with the instrument present "
                     "(target 0) are excluded from every metric",
        "wmae_convention": WMAE_DESCRIPTION[wmae],
        "clip": (f"predictions clipped to [0, {h:g}] before scoring (--clip)" if clip else
                 "none: predictions scored as written, not clipped to [0, h] (--clip to clip)"),
        "selections": {"inMAE": "0 < y < h", "outMAE": "y = h", "eMAE": "0 < y < 0.1h",
                       "mMAE": "0.1h < y < 0.9h", "dMAE": "0.9h < y < h",
                       "pMAE": "0.1h + 1e-9h < prediction < 0.9h - 1e-9h and y > 0",
                       "MAE": "0 < y <= h"},
        "pmae_tolerance": "pMAE drops predictions within 1e-9 h of 0.1h or 0.9h (strict bounds with a "
                          "tolerance), so a prediction of exactly 0.1h or 0.9h is in no range "
                          "whatever its binary rounding",
        "boundaries": "strict, by integer frame distance d = round(60 fps y) against the horizon "
                      "in frames (a frame exactly at 0.1h or 0.9h is in neither range)",
        "per_video": "the same metrics over the frames of each video alone, mean over instruments",
        "std_axis": {},
    })
    return {"task": "anticipation", "label": label, "protocol": protocol,
            "instruments": r["instruments"], "mean": r["mean"],
            "per_video": {v: {"frames": len(gt[v]), **r["per_video"][v]["mean"]} for v in videos}}


def anticipation_baselines(gt: Mapping[str, np.ndarray], train: Sequence[str], test: Sequence[str],
                           instruments: Sequence[str], horizon: float,
                           phases: Mapping[str, np.ndarray] | None = None) -> dict:
    """{"constant_h" | "train_mean" [| "phase_prior"]: mean inMAE ... (minutes)} on the `test`
    videos of predictions that read no frames: constant h ("never within the horizon"), each
    instrument's mean target over the `train` videos and, given ground-truth `phases`
    ({video: int [N]}, -1 = unlabelled), each instrument's mean target per phase over the `train`
    videos, looked up with the test frame's TRUE phase (an oracle phase: a model that recognised
    the phase perfectly and knew nothing else). gt: {video: [N, I] minutes}. A trained model is
    only worth reading where it beats all of them."""
    train_y = np.concatenate([gt[v] for v in train])  # [N, I]
    mean = train_y.mean(0)  # [I]
    truth = {v: gt[v] for v in test}
    preds = {"constant_h": {v: np.full_like(y, horizon) for v, y in truth.items()},
             "train_mean": {v: np.broadcast_to(mean, y.shape).copy() for v, y in truth.items()}}
    if phases is not None:
        train_p = np.concatenate([np.asarray(phases[v], np.int64) for v in train])  # [N]
        if len(train_p) != len(train_y):
            raise SurgflowError("anticipation_baselines: phase and anticipation rows differ in length")
        num = int(max(max(int(np.max(phases[v], initial=-1)) for v in list(train) + list(test)), 0)) + 1
        prior = np.tile(mean, (num + 1, 1))  # [P + 1, I]; the last row serves unlabelled frames
        for p in range(num):
            sel = train_p == p
            if sel.any():  # a phase never seen in training keeps the overall mean
                prior[p] = train_y[sel].mean(0)
        preds["phase_prior"] = {}
        for v, y in truth.items():
            ph = np.asarray(phases[v], np.int64)
            if len(ph) != len(y):
                raise SurgflowError(f"anticipation_baselines: {v}: {len(ph)} phase rows for "
                                    f"{len(y)} anticipation rows")
            preds["phase_prior"][v] = prior[np.where(ph >= 0, ph, num)]
    return {k: score_anticipation(truth, p, instruments, horizon)["mean"] for k, p in preds.items()}


# ---------------------------------------------------------------- output

def write_json(result: dict, path) -> None:
    """Atomic JSON; undefined values (NaN) become null (io_utils.json_safe)."""
    atomic_write_json(path, result)


def _f(x, width: int = 7, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return f"{'n/a':>{width}}"
    return f"{x:{width}.{digits}f}"


def _pm(d: Mapping) -> str:
    return f"{_f(d['mean'])} +- {_f(d['std'], 6)}"


def format_table(result: dict) -> str:
    """Aligned text table of a score_* result (the task's rows from its evaluation); every line
    starts with `[label]` when labelled."""
    task = result["task"]
    p = result["protocol"]
    lines: list[str] = []
    title = f"{task} scores: {p['num_videos']} videos, {p['num_frames']} frames at {p['fps']:g} fps"
    if p.get("NON-CAUSAL"):
        title = "NON-CAUSAL " + title + " (model in train mode: not valid online results)"
    lines += [title, "=" * min(len(title), 100)]

    lines.append(f"videos: {compact_names(p['videos'])}"
                 + (f"  (--videos {p['videos_selection']})" if p.get("videos_selection") else ""))
    if "gt_fps_source" in p:
        lines.append(f"rates: evaluation {p['fps']:g} fps ({p['fps_source']}), ground truth "
                     f"{p['gt_fps']:g} fps ({p['gt_fps_source']})")
    lines += evaluation_of(task).table_lines(result)
    for note in p.get("notes", []):
        lines.append(f"note: {note}")
    label = result.get("label")
    if label:
        lines = [f"[{label}] {ln}" for ln in lines]
    return "\n".join(lines)


# ---------------------------------------------------------------- per-task evaluation

class TaskEvaluation:
    """What validation, `surgflow eval` and the score tables do with one task's outputs.

    `names` (below) is anything with phase_names, tool_names, instruments and horizon (a RunMeta,
    or validation's vocabulary). A rec is one video of runner.predict_dataset: {key: array [N, ...]}.
    Every hook answers {} / None / [] when the rec lacks its keys, so callers can ask every
    registered task's evaluation."""
    validation_metrics: tuple = ()  # names validation_summary computes (train.best_metric choices)
    per_video_columns: tuple = ()  # the per-video table's metric columns (result["per_video"])
    per_video_digits, per_video_unit = 2, "percent"
    per_video_title = ""  # the printed per-video title ("" = per video (unit))
    score_help = ""  # `surgflow score TASK`'s description; "" = the task has no file scorer
    viewer_metrics: tuple = ()  # ((per-video key, label), ...) `surgflow view` shows; (): the first
                                # per_video_column

    def predictions(self, rec: dict) -> dict:
        """Keys derived from the decoded outputs of one video (e.g. argmax labels)."""
        return {}

    def ground_truth(self, dataset, video: str, names) -> dict:
        """{gt key: array [N, ...]} of `video` in the prepared `dataset`."""
        return {}

    def validation_record(self, task, outputs: dict, decoded: dict, labels):
        """One validation video's picklable record (numpy), or None; `task` the model's Task,
        outputs/decoded [1, N, ...], labels the video's samplers.Batch."""
        return None

    def validation_summary(self, task, records: dict, names, wmae: str) -> dict:
        """{"val/...": float} over {video: record} (every video's, in dataset order)."""
        return {}

    def validation_ribbons(self, records: dict) -> dict:
        """{video: (gt, pred)} phase ids for the validation ribbons, or {}."""
        return {}

    def write_files(self, rec: dict, video: str, pred_dir: Path, gt_dir: Path, names) -> None:
        """This task's prediction files (files.py formats) and ground truth at the evaluation fps."""

    def write_predictions(self, rec: dict, video: str, out_dir: Path, names) -> list[Path]:
        """`surgflow predict`'s files of one stream: every sampled frame, no ground truth."""
        return []

    def score(self, preds: dict, names, fps: float, label, non_causal: bool, notes,
              relaxed=None, wmae: str = "per_instrument") -> dict | None:
        """A score_* result over {video: rec}, or None when the recs lack this task's keys."""
        return None

    def table_lines(self, result: dict) -> list[str]:
        """format_table's rows of this task's result (between the header and the notes)."""
        return []

    def diagnostics(self, preds: dict, names, unit: str) -> dict | None:
        return None

    def format_diagnostics(self, diag: dict, label) -> str:
        return ""

    def plots(self, preds: dict, videos, result: dict, names, pdir: Path, fps: float, label,
              non_causal: bool) -> list:
        return []

    def viewer_columns(self, result: dict) -> list[dict]:
        """`surgflow view`'s columns of this task's result: [{key, label, digits, mean, std}], the
        run's mean +- sample std over its videos (result["per_video"]); each video shows its value."""
        unit = {"percent": "%", "minutes": "min"}.get(self.per_video_unit, self.per_video_unit)
        digits = 1 if self.per_video_unit == "percent" else self.per_video_digits
        metrics = self.viewer_metrics or tuple((k, f"{result.get('task', '')} {k}".strip())
                                               for k in self.per_video_columns[:1])
        rows = result.get("per_video") or {}
        cols = []
        for key, name in metrics:
            vals = [float(r[key]) for r in rows.values()
                    if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            cols.append({"key": key, "label": f"{name} ({unit})", "digits": digits,
                         "mean": float(np.mean(vals)) if vals else None,
                         "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None})
        return cols

    def add_score_arguments(self, parser) -> None:
        """`surgflow score TASK`'s own flags; the common ones (--pred, --gt-fps, --fps, --videos,
        --truncate, --json, --plots, --label) are added by commands/score.py."""

    def score_files(self, args, notes: list) -> tuple[dict, list]:
        """(score_* result, plot paths) of the prediction files in args.pred against the ground
        truth the task's flags name (`surgflow score TASK`)."""
        raise NotImplementedError(f"{type(self).__name__} has no file scorer")


def file_rates(args, gt_dir, gt_kind: str) -> tuple[dict, dict]:
    """The loaders' keyword arguments (rates, --truncate, --videos) and the protocol's extra
    entries for `surgflow score`'s common flags; gt_kind is a files.SUFFIX key."""
    rates = files.rates_for(gt_dir, args.pred, args.gt_fps, args.fps, gt_kind)
    loader = dict(truncate=args.truncate, videos=args.videos, rates=rates)
    return loader, {**rates.protocol(), "videos_selection": args.videos}


def phase_vocabulary(spec: str) -> list[str]:
    """--phases: cholec80, autolaparo, or a mapping file ('id name' lines)."""
    key = spec.lower()
    if key == "cholec80":
        return list(labels.CHOLEC80_PHASES)
    if key == "autolaparo":
        return list(labels.AUTOLAPARO_PHASES)
    if not Path(spec).is_file():
        raise SurgflowError(f"--phases {spec!r}: not cholec80, autolaparo or an existing mapping file")
    return parse_mapping(spec)


def _has(preds: Mapping, *keys: str) -> bool:
    return bool(preds) and all(k in preds[v] for v in preds for k in keys)


def _prediction_table(rec: dict, key: str, suffix: str, columns, video: str, out_dir) -> list[Path]:
    """`<video><suffix>` in out_dir: the table of rec[key] [N, K] (nothing when absent or K = 0)."""
    if key not in rec or not rec[key].shape[-1]:
        return []
    path = Path(out_dir) / f"{video}{suffix}"
    files.write_table(path, rec[key], list(columns))
    return [path]


def _cols(preds: Mapping, key: str) -> dict:
    return {v: preds[v][key] for v in sorted(preds)}


class PhaseEvaluation(TaskEvaluation):
    validation_metrics = ("val/accuracy", "val/f1", "val/jaccard")
    per_video_columns = ("accuracy", "precision", "recall", "jaccard", "f1")
    score_help = ("phase recognition: video-wise, per-phase, frame-pooled, segment and (on "
                  "request) relaxed metrics")
    viewer_metrics = (("accuracy", "accuracy"), ("f1", "F1"))

    def viewer_columns(self, result):
        """The video-wise block's mean +- std (the numbers the score table prints)."""
        return [{**c, "mean": result["video"][c["key"]]["mean"], "std": result["video"][c["key"]]["std"]}
                for c in super().viewer_columns(result)]

    def add_score_arguments(self, p):
        p.add_argument("--gt", required=True, help="ground-truth directory (<video>-phase.txt files "
                                                   "or the Cholec80 root with phase_annotations/)")
        p.add_argument("--relaxed", choices=["published", "corrected"], default=None,
                       help="also report relaxed-boundary metrics (published = the Cholec80 MATLAB "
                            "script with its bugs; corrected = intended windows, video-wise)")
        p.add_argument("--gt-only", action="store_true",
                       help="macro mean over ground-truth phases only (default: ground truth union "
                            "prediction)")
        p.add_argument("--phases", default="cholec80",
                       help="phase vocabulary: cholec80, autolaparo, or a mapping file ('id name' "
                            "lines)")

    def score_files(self, args, notes):
        loader, extra = file_rates(args, args.gt, "phase")
        names = phase_vocabulary(args.phases)
        gts, preds = files.load_phase_dirs(args.gt, args.pred, names, notes=notes, **loader)
        result = score_phase(gts, preds, names, loader["rates"].fps, relaxed=args.relaxed,
                             gt_only=args.gt_only, label=args.label, notes=notes,
                             protocol_extra=extra)
        written = []
        if args.plots:
            written = plots_mod.phase_ribbons(gts, preds, names, args.plots, loader["rates"].fps,
                                              args.label)
            written.append(plots_mod.confusion_matrix_plot(
                np.array(result["confusion"]), names, f"{args.plots}/confusion.png", args.label))
        return result, written

    def predictions(self, rec):
        return {"phase": rec["phase_prob"].argmax(-1).astype(np.int64)} if "phase_prob" in rec else {}

    def ground_truth(self, dataset, video, names):
        return {"gt_phase": np.asarray(dataset.phase(video), dtype=np.int64)}

    def validation_record(self, task, outputs, decoded, labels):
        target = task.target(labels)  # [1, N], -1 = unlabelled
        pred = outputs[task.name].argmax(-1)  # [1, N]
        mask = labels.valid & (target >= 0)
        keep = labels.valid[0]
        return {"correct": int(((pred == target) & mask).sum()), "labelled": int(mask.sum()),
                "ids": (target[0][keep].cpu().numpy(), pred[0][keep].cpu().numpy())}

    def validation_summary(self, task, records, names, wmae):
        """val/accuracy: mean over videos of the per-video accuracy (labelled frames); val/f1,
        val/jaccard: video-wise macro F1 and Jaccard (phase_metrics.videowise)."""
        accs = [r["correct"] / r["labelled"] for r in records.values() if r["labelled"]]
        if not accs:
            return {}
        ids = {v: r["ids"] for v, r in records.items()}
        summary = phase_metrics.videowise({v: g for v, (g, _) in ids.items()},
                                          {v: p for v, (_, p) in ids.items()},
                                          len(names.phase_names))["summary"]
        return {"val/accuracy": float(np.mean(accs)), "val/f1": summary["f1"]["mean"],
                "val/jaccard": summary["jaccard"]["mean"]}

    def validation_ribbons(self, records):
        if not any(r["labelled"] for r in records.values()):
            return {}  # no labelled frame: no phase metrics, no ribbons
        return {v: r["ids"] for v, r in records.items()}

    def write_files(self, rec, video, pred_dir, gt_dir, names):
        if "phase" in rec:  # only labelled frames (Frame = index at the evaluation fps), as the gt
            gt = rec["gt_phase"]
            keep = np.flatnonzero(gt >= 0)
            for d, lab in ((pred_dir, rec["phase"]), (gt_dir, gt)):
                rows = "".join(f"{i}\t{names.phase_names[lab[i]]}\n" for i in keep)
                atomic_write_text(d / f"{video}{files.SUFFIX['phase']}", "Frame\tPhase\n" + rows)
        if "phase_prob" in rec:  # every frame's probabilities, for `surgflow view` (not scored)
            files.write_table(pred_dir / f"{video}-phase_prob.txt", rec["phase_prob"],
                              names.phase_names, fmt="{:.3g}")

    def write_predictions(self, rec, video, out_dir, names):
        if "phase_prob" not in rec:
            return []
        path = Path(out_dir) / f"{video}{files.SUFFIX['phase']}"
        files.write_phase_file(path, rec["phase_prob"].argmax(-1), list(names.phase_names) or None)
        return [path]

    def score(self, preds, names, fps, label, non_causal, notes, relaxed=None, wmae="per_instrument"):
        if not _has(preds, "phase"):
            return None
        return score_phase(_cols(preds, "gt_phase"), _cols(preds, "phase"), names.phase_names, fps,
                           relaxed=relaxed, label=label, non_causal=non_causal, notes=notes)

    def table_lines(self, result):
        p, lines = result["protocol"], []
        lines.append(f"macro over: {p['macro_phases']}")
        lines.append("video-wise (mean +- sample std over videos)")
        for m in phase_metrics.METRICS:
            lines.append(f"  {m:<10} {_pm(result['video'][m])}")
        lines.append("per phase (mean over videos containing the phase)")
        head = f"  {'phase':<28}{'videos':>7}" + "".join(f"{m:>11}" for m in phase_metrics.CLASS_METRICS)
        lines.append(head)
        for name, e in result["per_phase"].items():
            lines.append(f"  {name[:27]:<28}{e['videos']:>7}" + "".join(
                f"{_f(e[m], 11)}" for m in phase_metrics.CLASS_METRICS))
        lines.append("mean over phases (+- across phases): " + "  ".join(
            f"{m} {_pm(result['per_phase_mean'][m])}" for m in ("jaccard", "f1")))
        fr = result["frame"]
        lines.append("frame-pooled: " + "  ".join(f"{m} {_f(fr[m], 6)}" for m in phase_metrics.METRICS))
        s = result["segments"]
        lines.append(f"segments: edit {_f(s['edit'], 6)} +- {_f(s['edit_std'], 6)}  "
                     + "  ".join(f"{k} {_f(s[k], 6)}" for k in s if k.startswith("f1@")))
        if "relaxed" in result:
            r = result["relaxed"]
            if r["variant"] == "published":
                lines.append(f"relaxed boundaries, variant PUBLISHED (MATLAB script, bugs included; "
                             f"window {r['window_frames']} frames)")
                lines.append(f"  accuracy  {_pm(r['accuracy'])}   (+- across videos)")
                for m in ("jaccard", "precision", "recall"):
                    lines.append(f"  {m:<9} {_pm(r[m])}   (+- across phases)")
            else:
                lines.append(f"relaxed boundaries, variant CORRECTED (window {r['window_frames']} "
                             f"frames; mean +- sample std over videos)")
                for m in phase_metrics.METRICS:
                    lines.append(f"  {m:<10} {_pm(r['video'][m])}")
        return lines

    def diagnostics(self, preds, names, unit):
        """Pooled per-phase P/R/F1, confusion, phases never predicted on a video."""
        if not _has(preds, "phase"):
            return None

        return phase_diagnostics({v: preds[v]["gt_phase"] for v in preds},
                                 {v: preds[v]["phase"] for v in preds}, names.phase_names, unit=unit)

    def format_diagnostics(self, diag, label):
        return format_diagnostics(diag, label)

    def plots(self, preds, videos, result, names, pdir, fps, label, non_causal):
        written = plots_mod.phase_ribbons({v: preds[v]["gt_phase"] for v in videos},
                                          {v: preds[v]["phase"] for v in videos},
                                          names.phase_names, pdir, fps, label, non_causal)
        written.append(plots_mod.confusion_matrix_plot(
            np.array(result["confusion"]), names.phase_names, pdir / "confusion.png", label,
            non_causal))
        return written


class ToolsEvaluation(TaskEvaluation):
    per_video_columns = ("mAP",)
    score_help = "tool presence: AP per tool and mAP (frame-pooled)"

    def viewer_columns(self, result):
        """mAP pooled over frames as the score table prints it (no spread over videos)."""
        return [{**c, "mean": result["mAP"], "std": None} for c in super().viewer_columns(result)]

    def add_score_arguments(self, p):
        p.add_argument("--gt", required=True, help="tool annotation directory (<video>-tool.txt)")

    def score_files(self, args, notes):
        loader, extra = file_rates(args, args.gt, "tool")
        gts, preds, names = files.load_tool_dirs(args.gt, args.pred, None, notes=notes, **loader)
        return score_tools(gts, preds, names, loader["rates"].fps, label=args.label, notes=notes,
                           protocol_extra=extra), []

    def ground_truth(self, dataset, video, names):
        tools = dataset.tools(video)
        return {} if tools is None else {"gt_tools": np.asarray(tools, dtype=np.float32)}

    def write_files(self, rec, video, pred_dir, gt_dir, names):
        if "tools_prob" in rec:
            files.write_table(pred_dir / f"{video}{files.SUFFIX['tool']}", rec["tools_prob"],
                              names.tool_names)
        if "gt_tools" in rec and len(names.tool_names):
            files.write_table(gt_dir / f"{video}{files.SUFFIX['tool']}", rec["gt_tools"],
                              names.tool_names, fmt="{:.0f}")

    def write_predictions(self, rec, video, out_dir, names):
        return _prediction_table(rec, "tools_prob", files.SUFFIX["tool"], names.tool_names, video,
                                 out_dir)

    def score(self, preds, names, fps, label, non_causal, notes, relaxed=None, wmae="per_instrument"):
        if not _has(preds, "tools_prob", "gt_tools"):
            return None
        return score_tools(_cols(preds, "gt_tools"), _cols(preds, "tools_prob"), names.tool_names,
                           fps, label=label, non_causal=non_causal, notes=notes)

    def table_lines(self, result):
        lines = []
        lines.append("average precision per tool (frame-pooled)")
        for n, a in result["tools"].items():
            lines.append(f"  {n:<16}{_f(a)}")
        lines.append(f"  {'mAP':<16}{_f(result['mAP'])}")
        return lines


class AnticipationEvaluation(TaskEvaluation):
    validation_metrics = ("val/wMAE", "val/inMAE", "val/outMAE")
    per_video_columns = ("inMAE", "outMAE", "wMAE", "eMAE", "pMAE", "dMAE", "mMAE", "MAE")
    per_video_digits, per_video_unit = 3, "minutes"
    per_video_title = "per video (minutes; anticipation: mean over instruments)"
    score_help = "instrument anticipation: inMAE ... mMAE (minutes)"
    viewer_metrics = (("wMAE", "wMAE"),)

    def viewer_columns(self, result):
        """wMAE pooled over frames as the score table prints it (no spread over videos)."""
        return [{**c, "mean": result["mean"][c["key"]], "std": None}
                for c in super().viewer_columns(result)]

    def add_score_arguments(self, p):
        p.add_argument("--tools", required=True,
                       help="tool annotation directory; the ground truth is built from it for "
                            "--horizon")
        p.add_argument("--horizon", type=float, required=True,
                       help="horizon h in minutes (3 or 5), > 0")
        p.add_argument("--instruments", default=None,
                       help="comma-separated instruments (default: Bipolar,Scissors,Clipper,"
                            "Irrigator,SpecimenBag)")
        p.add_argument("--per-video", action="store_true",
                       help="pool per video then average (default: all frames pooled per instrument)")
        p.add_argument("--wmae", choices=["per_instrument", "pitfalls_bn"], default="per_instrument",
                       help="mean wMAE over instruments: per_instrument = mean of each instrument's "
                            "(inMAE+outMAE)/2 (MICCAI 2020); pitfalls_bn = (mean inMAE + mean "
                            "outMAE)/2 (the BN-pitfalls code's meter)")
        p.add_argument("--clip", action="store_true",
                       help="clip predictions to [0, horizon] before scoring (default: scored as "
                            "written)")

    def score_files(self, args, notes):
        if not args.horizon > 0:
            raise SurgflowError(f"--horizon must be a positive number of minutes (3 or 5 in the "
                                f"literature), got {args.horizon:g}")
        loader, extra = file_rates(args, args.tools, "tool")
        inst = ([s.strip() for s in args.instruments.split(",") if s.strip()]
                if args.instruments else list(ANTICIPATION_INSTRUMENTS))
        gts, preds = files.load_anticipation_dirs(args.tools, args.pred, inst, args.horizon,
                                                  notes=notes, **loader)
        fps = loader["rates"].fps
        result = score_anticipation(gts, preds, inst, args.horizon, fps, per_video=args.per_video,
                                    label=args.label, notes=notes, clip=args.clip, wmae=args.wmae,
                                    protocol_extra=extra)
        written = (plots_mod.anticipation_curves(gts, preds, inst, args.horizon, args.plots, fps,
                                                 args.label) if args.plots else [])
        return result, written

    def ground_truth(self, dataset, video, names):
        if not names.instruments or dataset.tools(video) is None:
            return {}
        return {"gt_anticipation": np.asarray(
            dataset.anticipation(video, names.horizon, names.instruments), dtype=np.float32)}

    def validation_record(self, task, outputs, decoded, labels):
        return (task.target(labels)[0].cpu().numpy(),  # [N, I] minutes
                decoded["anticipation_min"][0].float().cpu().numpy())

    def validation_summary(self, task, records, names, wmae):
        """val/wMAE, val/inMAE, val/outMAE: frame-pooled per instrument, mean over instruments."""
        if not records:
            return {}
        mean = anticipation_metrics.anticipation_scores(
            {v: g for v, (g, _) in records.items()}, {v: p for v, (_, p) in records.items()},
            names.instruments, task.horizon, wmae=wmae)["mean"]
        return {"val/wMAE": mean["wMAE"], "val/inMAE": mean["inMAE"], "val/outMAE": mean["outMAE"]}

    def write_files(self, rec, video, pred_dir, gt_dir, names):
        if "anticipation_min" in rec:
            files.write_table(pred_dir / f"{video}{files.SUFFIX['anticipation']}",
                              rec["anticipation_min"], names.instruments)

    def write_predictions(self, rec, video, out_dir, names):
        return _prediction_table(rec, "anticipation_min", files.SUFFIX["anticipation"],
                                 names.instruments, video, out_dir)

    def score(self, preds, names, fps, label, non_causal, notes, relaxed=None, wmae="per_instrument"):
        if not _has(preds, "anticipation_min", "gt_anticipation"):
            return None
        return score_anticipation(_cols(preds, "gt_anticipation"), _cols(preds, "anticipation_min"),
                                  names.instruments, names.horizon, fps, label=label,
                                  non_causal=non_causal, notes=notes, wmae=wmae)

    def table_lines(self, result):
        p, lines = result["protocol"], []
        lines.append(f"horizon {p['horizon']:g} min; pooling: {p['pooling']}; minutes")
        lines.append(f"wMAE mean: {p['wmae_convention']}")
        lines.append(f"clipping: {p['clip']}; MAE = all frames with 0 < y <= h")
        ms = anticipation_metrics.METRICS
        lines.append(f"  {'instrument':<14}" + "".join(f"{m:>9}" for m in ms))
        for n, e in result["instruments"].items():
            lines.append(f"  {n:<14}" + "".join(_f(e[m], 9, 3) for m in ms))
        lines.append(f"  {'mean':<14}" + "".join(_f(result["mean"][m], 9, 3) for m in ms))
        return lines

    def plots(self, preds, videos, result, names, pdir, fps, label, non_causal):
        return plots_mod.anticipation_curves({v: preds[v]["gt_anticipation"] for v in videos},
                                             {v: preds[v]["anticipation_min"] for v in videos},
                                             names.instruments, names.horizon, pdir, fps, label,
                                             non_causal)


PHASE, TOOLS, ANTICIPATION = PhaseEvaluation(), ToolsEvaluation(), AnticipationEvaluation()


def evaluation_of(name: str) -> TaskEvaluation:
    """The evaluation of registered task `name` (its class's `evaluation`: an object or a
    "module:attribute" string, imported here because models/ must not import evaluation/)."""
    ev = TASKS.get(name).evaluation
    if isinstance(ev, str):
        module, _, attr = ev.partition(":")
        ev = getattr(importlib.import_module(module), attr)
    return ev if ev is not None else TaskEvaluation()


def task_names() -> list[str]:
    """Every registered task, by Task.order (phase, tools, anticipation, then plugins)."""
    from surgflow.models.tasks import ordered  # heavy: torch; `surgflow score` imports this module without it

    return ordered(TASKS.names())
