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
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from surgflow.io_utils import SurgflowError, atomic_write_text, progress
from surgflow.runs import RunMeta


@contextlib.contextmanager
def _bn_batch_stats(model, enabled: bool):
    """BatchNorm layers in train mode (batch statistics) inside the block; their running
    statistics are restored afterwards so the cheat run does not alter the model."""
    import torch

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

    Returns {video: {"phase_prob": [N, P], "phase": int64 [N] (argmax), "tools_prob": [N, K],
    "anticipation_min": [N, I] (only the model's tasks), "gt_phase": int64 [N],
    "gt_tools": [N, K] (when the dataset has tool labels), "gt_anticipation": [N, I]}}.
    `cheat`: BatchNorm in train mode (NON-CAUSAL). meta: RunMeta (or a checkpoint meta dict)."""
    import torch

    from surgflow.models.video_loop import run_video

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
                if "phase_prob" in rec:
                    rec["phase"] = rec["phase_prob"].argmax(-1).astype(np.int64)
                rec["gt_phase"] = np.asarray(dataset.phase(v), dtype=np.int64)
                tools = dataset.tools(v)
                if tools is not None:
                    rec["gt_tools"] = np.asarray(tools, dtype=np.float32)
                    if instruments:
                        rec["gt_anticipation"] = np.asarray(
                            dataset.anticipation(v, horizon, instruments), dtype=np.float32)
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
    from surgflow.evaluation import files

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for v, rec in preds.items():
        gt = rec["gt_phase"]
        keep = np.flatnonzero(gt >= 0)
        if "phase" in rec:
            for d, lab in ((pred_dir, rec["phase"]), (gt_dir, gt)):
                rows = "".join(f"{i}\t{phase_names[lab[i]]}\n" for i in keep)
                atomic_write_text(d / f"{v}-phase.txt", "Frame\tPhase\n" + rows)
        if "tools_prob" in rec:
            files.write_table(pred_dir / f"{v}-tool.txt", rec["tools_prob"], tool_names)
        if "anticipation_min" in rec:
            files.write_table(pred_dir / f"{v}-anticipation.txt", rec["anticipation_min"], instruments)
        if "gt_tools" in rec and len(tool_names):
            files.write_table(gt_dir / f"{v}-tool.txt", rec["gt_tools"], tool_names, fmt="{:.0f}")
    if fps is not None:
        files.write_fps_sidecar(pred_dir, fps, "surgflow eval predictions")
        files.write_fps_sidecar(gt_dir, fps, "surgflow eval ground truth at the evaluation rate")


def score_predictions(preds: dict, meta, fps: float, label: Optional[str], cheat: bool,
                      relaxed: Optional[str] = None, notes: Sequence[str] = ()) -> dict:
    """{task: score_* result} for the tasks the model predicts."""
    from surgflow.evaluation import score

    meta = RunMeta.coerce(meta)
    res = {}
    videos = sorted(preds)
    if all("phase" in preds[v] for v in videos):
        res["phase"] = score.score_phase({v: preds[v]["gt_phase"] for v in videos},
                                         {v: preds[v]["phase"] for v in videos},
                                         meta.phase_names, fps, relaxed=relaxed, label=label,
                                         non_causal=cheat, notes=notes)
    if all("tools_prob" in preds[v] and "gt_tools" in preds[v] for v in videos):
        res["tools"] = score.score_tools({v: preds[v]["gt_tools"] for v in videos},
                                         {v: preds[v]["tools_prob"] for v in videos},
                                         meta.tool_names, fps, label=label, non_causal=cheat,
                                         notes=notes)
    if all("anticipation_min" in preds[v] and "gt_anticipation" in preds[v] for v in videos):
        res["anticipation"] = score.score_anticipation(
            {v: preds[v]["gt_anticipation"] for v in videos},
            {v: preds[v]["anticipation_min"] for v in videos}, meta.instruments,
            meta.horizon, fps, label=label, non_causal=cheat, notes=notes)
    return res


def evaluate_run(run_dir, split: str = "test", checkpoint: str = "best", cheat: bool = False,
                 out=None, device="cpu", chunk: Optional[int] = None, relaxed: Optional[str] = None,
                 plots: bool = True, max_plot_videos: int = 8, quiet: bool = False,
                 data_root=None) -> dict:
    """Evaluate a run on a split subset; returns {"scores": {task: result}, <task>: result (same
    objects, for convenience), "out": dir, "json": path, "predictions": dir, "ground_truth": dir,
    "plots": [paths], "text": table, "rescore": command, "preds": predict_dataset output}."""
    from surgflow.data.store import PreparedDataset
    from surgflow.evaluation import plots as plots_mod, score
    from surgflow.outputs import check_writable_dir
    from surgflow.runs import load_model

    if chunk is not None and int(chunk) < 1:
        raise SurgflowError(f"--chunk {chunk}: must be >= 1 frame")
    model, cfg, meta = load_model(run_dir, checkpoint, device)
    meta = RunMeta.coerce(meta, model)
    root = data_root or meta.dataset_root
    if not root:
        raise SurgflowError(f"{run_dir}: checkpoint meta has no dataset_root; pass --data-root")
    try:
        ds = PreparedDataset(root, split=meta.split, subset=split)
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
    from surgflow.models.video_loop import default_chunk

    chunk = int(chunk if chunk is not None else default_chunk(cfg))  # validation uses the same
    tag = f"{split}_NONCAUSAL" if cheat else split
    if out is None:
        base = Path(run_dir)
        if base.is_file():  # a checkpoint file: RUN_DIR/checkpoints/x.pt -> RUN_DIR
            base = base.parent.parent if base.parent.name == "checkpoints" else base.parent
        out = base / f"eval_{tag}"
    out = check_writable_dir(out, "evaluation folder", "--out")  # before the long model pass
    label = f"{split} NON-CAUSAL" if cheat else split
    notes = [f"checkpoint: {checkpoint}; chunk {chunk} frames, state carried across chunks"]
    if not getattr(model, "is_causal", True):
        notes.append("offline model (non-causal head): the whole video is seen at once")
    preds = predict_dataset(model, ds, ds.videos, meta, chunk, device, cheat)
    fps = meta.fps or float(ds.fps)  # older metas without fps: the dataset's recorded rate
    pred_dir, gt_dir = out / "predictions", out / "ground_truth"
    write_prediction_files(preds, pred_dir, gt_dir, meta.phase_names, meta.tool_names,
                           meta.instruments, fps)
    scores = score_predictions(preds, meta, fps, label, cheat, relaxed, notes)
    text = "\n\n".join(score.format_table(r) for r in scores.values())
    prefix = "NONCAUSAL_" if cheat else ""
    json_path = out / f"{prefix}scores.json"
    score.write_json({"run": str(run_dir), "checkpoint": checkpoint, "split": split,
                      "NON-CAUSAL": bool(cheat), "scores": scores}, json_path)
    from surgflow.evaluation.per_video import write_per_video

    for task, r in scores.items():  # scores.<task>.per_video.csv / .md
        write_per_video(r, json_path, task)
    from surgflow.evaluation.tensorboard import log_eval_scores

    log_eval_scores(run_dir, scores, tag, checkpoint)  # beside the training curves in TensorBoard
    written: list[Path] = []
    if plots:
        pdir = out / "plots"
        videos = sorted(preds)[:max_plot_videos]
        if "phase" in scores:
            written += plots_mod.phase_ribbons({v: preds[v]["gt_phase"] for v in videos},
                                               {v: preds[v]["phase"] for v in videos},
                                               meta.phase_names, pdir, fps, label, cheat)
            written.append(plots_mod.confusion_matrix_plot(
                np.array(scores["phase"]["confusion"]), meta.phase_names, pdir / "confusion.png",
                label, cheat))
        if "anticipation" in scores:
            written += plots_mod.anticipation_curves(
                {v: preds[v]["gt_anticipation"] for v in videos},
                {v: preds[v]["anticipation_min"] for v in videos}, meta.instruments,
                meta.horizon, pdir, fps, label, cheat)
    mapping = gt_dir / "mapping.txt"  # phase vocabulary for `surgflow score --phases`
    atomic_write_text(mapping, "".join(f"{i} {n}\n" for i, n in enumerate(meta.phase_names)))
    rescore = (f"surgflow score phase --gt {gt_dir} --pred {pred_dir} --gt-fps {fps:g} --fps {fps:g}"
               f" --phases {mapping}")
    if not quiet:
        print(text)
        print(f"[{label}] wrote {json_path}, predictions in {pred_dir}, {len(written)} plots")
        print(f"[{label}] re-score with: {rescore}")
    # task results also at the top level (res["phase"]["video"]...), as the demo reads them
    return {**scores, "scores": scores, "out": str(out), "json": str(json_path), "predictions": str(pred_dir),
            "ground_truth": str(gt_dir), "plots": [str(p) for p in written], "text": text,
            "rescore": rescore, "preds": preds}
