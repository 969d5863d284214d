"""Validation during training: whole validation videos, spread over the ranks, results gathered.

Rank r runs videos r, r + W, r + 2W, ... (W = world size) and every rank receives every video's
result, so all ranks return the same metrics and none waits idle for rank 0 (a long validation on
rank 0 alone would hit the NCCL timeout of the waiting ranks).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from surgflow.io_utils import progress


def lower_is_better(metric: str) -> bool:
    return "loss" in metric.lower() or "mae" in metric.lower()


def validation_metrics(tasks) -> list[str]:
    """Names validate() computes for `tasks` (choices of train.best_metric)."""
    names = ["val/loss"]
    if "phase" in tasks:
        names += ["val/accuracy", "val/f1", "val/jaccard"]
    if "anticipation" in tasks:
        names += ["val/wMAE", "val/inMAE", "val/outMAE"]
    return names


@torch.no_grad()
def _validate_videos(model, ds, videos, cfg, rt, instruments: list[str]) -> dict:
    """{video: {loss_sum, n, correct, labelled, phase: (gt, pred) or None, antic: (gt, pred) or None}}
    for `videos`, by the eval protocol (models/video_loop.py, as `surgflow eval`): eval mode, fp32,
    state carried across chunks, an offline head sees the whole video at once."""
    from surgflow.models.video_loop import default_chunk, run_video

    tasks = cfg.task.tasks
    results = {}
    quiet = {} if rt.is_main else {"disable": True}
    for video in progress(videos, desc="validation", unit="video", leave=False, **quiet):
        run = run_video(model, ds, video, default_chunk(cfg), cfg.task.horizon, instruments,
                        rt.device)
        labels, outputs = run.labels.to(rt.device), run.outputs
        loss, _ = model.loss(outputs, labels, cfg)
        n = int(labels.valid.sum())
        correct = labelled = 0
        phase = antic = None
        if "phase" in tasks:
            pred = outputs["phase"].argmax(-1)  # [1, N]
            mask = labels.valid & (labels.phase >= 0)
            correct, labelled = int(((pred == labels.phase) & mask).sum()), int(mask.sum())
            keep = labels.valid[0]
            phase = (labels.phase[0][keep].cpu().numpy(), pred[0][keep].cpu().numpy())  # -1 = unlabelled
        if "anticipation" in tasks:
            antic = (labels.anticipation[0].cpu().numpy(),
                     model.decode(outputs)["anticipation_min"][0].float().cpu().numpy())
        results[video] = {"loss_sum": float(loss) * n, "n": n, "correct": correct,
                          "labelled": labelled, "phase": phase, "antic": antic}
    return results


def validate(model, ds, cfg, rt, instruments: list[str],
             phase_out: Optional[dict] = None) -> dict[str, float]:
    """Validation metrics (the same on every rank; collective under DDP: all ranks call it).

    val/accuracy: mean over videos of the per-video phase accuracy (labelled frames);
    val/f1, val/jaccard: video-wise macro F1 and Jaccard of the phases (evaluation.phase_metrics);
    val/loss: training loss over all valid frames; val/wMAE (anticipation): frame-pooled per
    instrument, mean over instruments (minutes). `phase_out`, when given, receives
    {video: (gt, pred)} phase ids of every video (for ribbons)."""
    was = model.training
    model.eval()
    mine = list(ds.videos)[rt.rank::rt.world_size]
    try:
        local = _validate_videos(model, ds, mine, cfg, rt, instruments)
    finally:
        model.train(was)
    results: dict = {}
    for part in rt.gather_object(local):
        results.update(part)
    videos = [v for v in ds.videos if v in results]  # dataset order, whatever rank ran them
    r = [results[v] for v in videos]
    out = {"val/loss": sum(x["loss_sum"] for x in r) / max(sum(x["n"] for x in r), 1)}
    accs = [x["correct"] / x["labelled"] for x in r if x["labelled"]]
    if accs:
        out["val/accuracy"] = float(np.mean(accs))
        from surgflow.evaluation.phase_metrics import videowise

        phases = {v: results[v]["phase"] for v in videos if results[v]["phase"] is not None}
        summary = videowise({v: g for v, (g, _) in phases.items()},
                            {v: p for v, (_, p) in phases.items()}, len(ds.phase_names))["summary"]
        out["val/f1"], out["val/jaccard"] = summary["f1"]["mean"], summary["jaccard"]["mean"]
        if phase_out is not None:
            phase_out.update(phases)
    antic = {v: results[v]["antic"] for v in videos if results[v]["antic"] is not None}
    if antic:
        from surgflow.evaluation.anticipation_metrics import anticipation_scores

        mean = anticipation_scores({v: g for v, (g, _) in antic.items()},
                                   {v: p for v, (_, p) in antic.items()}, instruments,
                                   cfg.task.horizon, wmae=cfg.task.wmae)["mean"]
        out["val/wMAE"], out["val/inMAE"], out["val/outMAE"] = mean["wMAE"], mean["inMAE"], mean["outMAE"]
    return out
