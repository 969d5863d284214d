"""`surgflow eval`: run a trained model over whole videos, causally, and score it.

Causal protocol (the paper's evaluation): each video is fed in order in chunks, the temporal state
is carried across chunks (reset at the video start), the model is in eval mode (BatchNorm uses its
running statistics), and the prediction for frame t only sees frames <= t. Predictions and the
ground truth at the evaluation fps are written as files (files.py formats) so that `surgflow score`
reproduces every number, and they are scored with the same functions (score.py).

`cheat=True` reproduces the "cheating" evaluation of the BN-pitfalls paper: BatchNorm layers run in
train mode and normalise each chunk with statistics pooled over all its frames, including future
ones. Every output is then marked NON-CAUSAL (terminal, JSON, plot titles and file names).
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Optional, Sequence

import numpy as np

from surgflow import runs
from surgflow.cli_args import format_size
from surgflow.data import store
from surgflow.evaluation import files, score
from surgflow.evaluation.per_video import write_per_video
from surgflow.evaluation.score import evaluation_of, task_names
from surgflow.evaluation.tensorboard import log_eval_scores
from surgflow.io_utils import SurgflowError, atomic_write_text, progress
from surgflow.outputs import check_writable_dir
from surgflow.runs import RunMeta, checkpoint_notes


@contextlib.contextmanager
def _bn_batch_stats(model, enabled: bool):
    """BatchNorm layers in train mode (batch statistics) inside the block; their running
    statistics are restored afterwards so the cheat run does not alter the model."""
    import torch  # heavy: torch; `surgflow score` paths import this module without it

    if not enabled:
        yield
        return
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.training, {k: v.clone() for k, v in m.named_buffers(recurse=False)}) for m in bns]
    for m in bns:
        m.train()
    try:
        yield
    finally:
        for m, was_training, bufs in saved:
            m.train(was_training)
            for k, v in bufs.items():
                getattr(m, k).copy_(v)


def predict_dataset(model, dataset, videos: Optional[Iterable[str]], meta, chunk: int = 64,
                    device="cpu", cheat: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Run `model` over whole videos of `dataset` in order (models/video_loop.py: state carried
    across chunks, an offline head sees the whole video in one temporal call).

    Returns {video: {the model's decoded outputs and what each task's evaluation derives from
    them, then every registered task's ground truth}}; for the built-in tasks "phase_prob" [N, P],
    "phase" int64 [N] (argmax), "tools_prob" [N, K], "anticipation_min" [N, I] (only the model's
    tasks), "gt_phase" int64 [N], "gt_tools" [N, K] (when the dataset has tool labels),
    "gt_anticipation" [N, I].
    `cheat`: BatchNorm in train mode (NON-CAUSAL). meta: RunMeta (or a checkpoint meta dict)."""
    import torch  # heavy: torch; `surgflow score` paths import this module without it

    from surgflow.models.video_loop import run_video  # heavy: torch

    evaluations = [evaluation_of(name) for name in task_names()]
    videos = list(dataset.videos if videos is None else videos)
    meta = RunMeta.coerce(meta, model)
    horizon, instruments = meta.horizon, meta.instruments
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with torch.no_grad(), _bn_batch_stats(model, cheat):
            for v in progress(videos, desc="eval", unit="video"):
                run = run_video(model, dataset, v, chunk, horizon, instruments, device)
                rec = {k: t[0].float().cpu().numpy() for k, t in model.decode(run.outputs).items()}
                for ev in evaluations:
                    rec.update(ev.predictions(rec))
                for ev in evaluations:
                    rec.update(ev.ground_truth(dataset, v, meta))
                n = dataset.num_frames(v)
                for k, a in rec.items():
                    if len(a) != n:
                        raise SurgflowError(f"{v}: {k} has {len(a)} frames, the video {n}; the model "
                                            f"or the dataset returned misaligned frames")
                out[v] = rec
    finally:
        model.train(was_training)
    return out


def write_prediction_files(preds: dict, pred_dir, gt_dir, phase_names: Sequence[str],
                           tool_names: Sequence[str], instruments: Sequence[str],
                           fps: Optional[float] = None) -> None:
    """Prediction files (files.py formats) plus the ground truth at the evaluation fps.

    Phase files keep only labelled frames (Frame = index at the evaluation fps), so prediction and
    ground truth rows match. `fps` is recorded in fps.json in both folders, from which
    `surgflow score` takes the rates (no --gt-fps / --fps needed)."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    names = SimpleNamespace(phase_names=list(phase_names), tool_names=list(tool_names),
                            instruments=list(instruments))
    evaluations = [evaluation_of(name) for name in task_names()]
    for v, rec in preds.items():
        for ev in evaluations:  # each writes the files of the keys it finds in rec
            ev.write_files(rec, v, pred_dir, gt_dir, names)
    if fps is not None:
        files.write_fps_sidecar(pred_dir, fps, "surgflow eval predictions")
        files.write_fps_sidecar(gt_dir, fps, "surgflow eval ground truth at the evaluation rate")


def score_predictions(preds: dict, meta, fps: float, label: Optional[str], cheat: bool,
                      relaxed: Optional[str] = None, notes: Sequence[str] = (),
                      wmae: str = "per_instrument") -> dict:
    """{task: score_* result} for the tasks the model predicts (wmae: the run's task.wmae)."""
    meta = RunMeta.coerce(meta)
    res = {}
    for name in task_names():  # Task.order: scores.json and the tables keep one order
        r = evaluation_of(name).score(preds, meta, fps, label, cheat, notes, relaxed, wmae)
        if r is not None:
            res[name] = r
    return res


def check_store_matches_run(ds, meta, root, run_dir) -> None:
    """Refuse a prepared store at another frame rate or frame size than the run was trained on:
    the model would see other time steps (its temporal state and the anticipation targets follow
    the rate) or other pixels, and every row would be labelled with the wrong rate."""
    diffs, fixes = [], []
    if meta.fps is not None and abs(float(ds.fps) - float(meta.fps)) > 1e-6:
        diffs.append(f"{ds.fps:g} fps (the run: {meta.fps:g} fps)")
        fixes.append(f"--fps {meta.fps:g}")
    if meta.size is not None and tuple(ds.size) != tuple(meta.size):
        diffs.append(f"{format_size(ds.size)} frames (the run: {format_size(meta.size)})")
        fixes.append(f"--size {format_size(meta.size)}")
    if diffs:
        why = (["its temporal state would step at another rate than in training and the rows "
                "would carry the wrong rate"] if any("fps" in f for f in fixes) else []) + \
              (["it would see frames of another size than in training"]
               if any("size" in f for f in fixes) else [])
        raise SurgflowError(
            f"{root}: prepared at {' and '.join(diffs)}; the model of {run_dir}: "
            f"{'; '.join(why)}. Pass --data-root of a store prepared like the run's "
            f"(`surgflow prepare LAYOUT RAW OUT {' '.join(fixes)}`)")


def evaluate_run(run_dir, split: str = "test", checkpoint: str = "kept", cheat: bool = False,
                 out=None, device="cpu", chunk: Optional[int] = None, relaxed: Optional[str] = None,
                 plots: bool = True, max_plot_videos: int = 8, quiet: bool = False,
                 data_root=None) -> dict:
    """Evaluate a run on a split subset; returns {"scores": {task: result}, <task>: result (same
    objects, for convenience), "out": dir, "json": path, "predictions": dir, "ground_truth": dir,
    "plots": [paths], "text": table, "rescore": command, "preds": predict_dataset output}."""
    if chunk is not None and int(chunk) < 1:
        raise SurgflowError(f"--chunk {chunk}: must be >= 1 frame")
    info: dict = {}
    # looked up at call time (module attributes), as the tests' stand-ins replace them
    model, cfg, meta = runs.load_model(run_dir, checkpoint, device, info=info)
    kept = checkpoint == "kept" and Path(run_dir).is_dir()
    # recorded (json, notes, TensorBoard step) as what was read: best, last or the file given
    checkpoint = info.get("which", checkpoint)

    ckpt_notes = checkpoint_notes(run_dir, info)  # which step; a live run; an unchecked best.pt
    if not quiet:
        for n in ckpt_notes:
            print(f"surgflow eval: {n}", file=sys.stderr)
    meta = RunMeta.coerce(meta, model)
    root = data_root or meta.dataset_root
    if not root:
        raise SurgflowError(f"{run_dir}: checkpoint meta has no dataset_root; pass --data-root")
    store_notes: list[str] = []  # missing videos and why: printed, and kept in the protocol notes
    try:
        ds = store.PreparedDataset(root, split=meta.split, subset=split, log=store_notes.append)
    except SurgflowError:
        if data_root or (Path(root) / "manifest.json").is_file():
            raise
        raise SurgflowError(
            f"{Path(root) / 'manifest.json'}: not found: the run was trained on {root}, which is "
            f"gone or moved; pass --data-root NEW_PATH (the prepared dataset's new folder), or "
            f"run `surgflow prepare` again") from None
    if not ds.videos:
        raise SurgflowError(f"split '{meta.split}' has no '{split}' videos in "
                            f"{root}; choose another --split (val or test)")
    check_store_matches_run(ds, meta, root, run_dir)
    from surgflow.models.video_loop import default_chunk  # heavy: torch

    chunk = int(chunk if chunk is not None else default_chunk(cfg))  # validation uses the same
    tag = f"{split}_NONCAUSAL" if cheat else split
    if out is None:
        base = Path(run_dir)
        if base.is_file():  # a checkpoint file: RUN_DIR/checkpoints/x.pt -> RUN_DIR
            base = base.parent.parent if base.parent.name == "checkpoints" else base.parent
        out = base / f"eval_{tag}"
    out = check_writable_dir(out, "evaluation folder", "--out")  # before the long model pass
    label = f"{split} NON-CAUSAL" if cheat else split
    kept_by = " (the one the run keeps: train.keep)" if kept else ""
    notes = [f"checkpoint: {checkpoint}{kept_by}; chunk {chunk} frames, state carried across chunks",
             *ckpt_notes, *store_notes]
    if not getattr(model, "is_causal", True):
        notes.append("offline model (non-causal head): the whole video is seen at once")
    preds = predict_dataset(model, ds, ds.videos, meta, chunk, device, cheat)
    fps = float(ds.fps)  # the rows are the store's frames: fps.json must carry the store's rate
    pred_dir, gt_dir = out / "predictions", out / "ground_truth"
    write_prediction_files(preds, pred_dir, gt_dir, meta.phase_names, meta.tool_names,
                           meta.instruments, fps)
    scores = score_predictions(preds, meta, fps, label, cheat, relaxed, notes,
                               wmae=getattr(getattr(cfg, "task", None), "wmae", "per_instrument"))
    text = "\n\n".join(score.format_table(r) for r in scores.values())
    prefix = "NONCAUSAL_" if cheat else ""
    diag = None  # the phase task's: pooled per-phase P/R/F1, confusion, never-predicted phases
    for task in scores:
        ev = score.evaluation_of(task)
        d = ev.diagnostics(preds, meta, unit=f"{split} videos")
        if d is not None:
            diag = d
            text += "\n\n" + ev.format_diagnostics(d, label)
            atomic_write_text(out / f"{prefix}diagnostics.txt", ev.format_diagnostics(d, label) + "\n")
    json_path = out / f"{prefix}scores.json"
    score.write_json({"run": str(run_dir), "checkpoint": checkpoint, "split": split,
                      "NON-CAUSAL": bool(cheat), "data_root": str(Path(root).resolve()),
                      "data_split": meta.split,  # the store read: `surgflow view` takes frames there
                      "scores": scores, "phase_diagnostics": diag}, json_path)

    for task, r in scores.items():  # scores.<task>.per_video.csv / .md
        write_per_video(r, json_path, task)

    log_eval_scores(run_dir, scores, tag, checkpoint)  # beside the training curves in TensorBoard
    written: list[Path] = []
    if plots:
        pdir = out / "plots"
        videos = sorted(preds)[:max_plot_videos]
        for task, r in scores.items():
            written += score.evaluation_of(task).plots(preds, videos, r, meta, pdir, fps, label, cheat)
    mapping = gt_dir / "mapping.txt"  # phase vocabulary for `surgflow score --phases`
    atomic_write_text(mapping, "".join(f"{i} {n}\n" for i, n in enumerate(meta.phase_names)))
    q = shlex.quote  # printed commands are pasted into a shell: paths with spaces stay one word
    rescore = (f"surgflow score phase --gt {q(str(gt_dir))} --pred {q(str(pred_dir))} --gt-fps {fps:g} "
               f"--fps {fps:g} --phases {q(str(mapping))}")
    if not quiet:
        print(text)
        print(f"[{label}] wrote {json_path}, predictions in {pred_dir}, {len(written)} plots")
        print(f"[{label}] re-score with: {rescore}")
        # the page (frame thumbnails, up to ~200 MB) is a separate step, not a cost of every eval
        print(f"[{label}] browse predictions and frames: surgflow view {shlex.quote(str(out))}")
    # task results also at the top level (res["phase"]["video"]...), as the demo reads them
    return {**scores, "scores": scores, "out": str(out), "json": str(json_path), "predictions": str(pred_dir),
            "ground_truth": str(gt_dir), "plots": [str(p) for p in written], "text": text,
            "rescore": rescore, "preds": preds, "diagnostics": diag}
