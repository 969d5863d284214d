"""Validation during training: whole validation videos, spread over the ranks, results gathered.

Rank r runs videos r, r + W, r + 2W, ... (W = world size) and every rank receives every video's
result, so all ranks return the same metrics and none waits idle for rank 0 (a long validation on
rank 0 alone would hit the NCCL timeout of the waiting ranks).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

from surgflow.evaluation.score import evaluation_of
from surgflow.io_utils import progress
from surgflow.models.tasks import ordered
from surgflow.models.video_loop import default_chunk, run_video


def lower_is_better(metric: str) -> bool:
    return "loss" in metric.lower() or "mae" in metric.lower()


def validation_metrics(tasks) -> list[str]:
    """Names validate() computes for `tasks` (choices of train.best_metric): val/loss, then each
    task's evaluation's (score.TaskEvaluation.validation_metrics), by Task.order."""
    return ["val/loss"] + [m for name in ordered(tasks) for m in evaluation_of(name).validation_metrics]


@torch.no_grad()
def _validate_videos(model, ds, videos, cfg, rt, instruments: list[str]) -> dict:
    """{video: {loss_sum, n, tasks: {task: its evaluation's validation record}}} for `videos`, by
    the eval protocol (models/video_loop.py, as `surgflow eval`): eval mode, fp32, state carried
    across chunks, an offline head sees the whole video at once."""
    tasks = {name: evaluation_of(name) for name in ordered(model.tasks)}
    results = {}
    quiet = {} if rt.is_main else {"disable": True}
    for video in progress(videos, desc="validation", unit="video", leave=False, **quiet):
        run = run_video(model, ds, video, default_chunk(cfg), cfg.task.horizon, instruments,
                        rt.device)
        labels, outputs = run.labels.to(rt.device), run.outputs
        loss, _ = model.loss(outputs, labels)
        decoded = model.decode(outputs)
        n = int(labels.valid.sum())
        records = {name: ev.validation_record(model.tasks[name], outputs, decoded, labels)
                   for name, ev in tasks.items()}
        results[video] = {"loss_sum": float(loss) * n, "n": n, "tasks": records}
    return results


def validate(model, ds, cfg, rt, instruments: list[str],
             phase_out: Optional[dict] = None) -> dict[str, float]:
    """Validation metrics (the same on every rank; collective under DDP: all ranks call it).

    val/loss: training loss over all valid frames; then each task's metrics from its evaluation
    (score.TaskEvaluation.validation_summary): val/accuracy (mean over videos of the per-video
    phase accuracy of labelled frames), val/f1, val/jaccard (video-wise macro, phase_metrics);
    val/wMAE, val/inMAE, val/outMAE (anticipation: frame-pooled per instrument, mean over
    instruments, minutes). `phase_out`, when given, receives {video: (gt, pred)} phase ids of every
    video (for ribbons)."""
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
    names = SimpleNamespace(phase_names=list(ds.phase_names), tool_names=list(ds.tool_names),
                            instruments=list(instruments))
    for name in ordered(model.tasks):
        ev = evaluation_of(name)
        records = {v: results[v]["tasks"][name] for v in videos
                   if results[v]["tasks"][name] is not None}
        out.update(ev.validation_summary(model.tasks[name], records, names, cfg.task.wmae))
        if phase_out is not None:
            phase_out.update(ev.validation_ribbons(records))
    return out
