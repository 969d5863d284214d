"""`surgflow eval`'s scores in the run's TensorBoard folder, beside its training curves."""
from __future__ import annotations

import math
from pathlib import Path

from surgflow.runs import load_checkpoint, resolve_checkpoint_path

SKIPPED = ("per_video", "confusion", "confusions", "notes", "protocol")  # tables, not curves


def score_scalars(scores: dict, prefix: str) -> dict[str, float]:
    """The finite numbers of an eval scores dict as {"<prefix>/<task>/...": value}."""
    out: dict[str, float] = {}
    for k, v in scores.items():
        if k in SKIPPED:
            continue
        if isinstance(v, dict):
            out.update(score_scalars(v, f"{prefix}/{k}"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}/{k}"] = float(v)
    return out


def log_eval_scores(run_dir, scores: dict, tag: str, checkpoint: str = "best") -> list[str]:
    """Scores as scalars `<tag>/<task>/...` in RUN_DIR/tb at the step of the evaluated checkpoint;
    returns the tags written ([] when the run has no tb/ folder)."""
    run = Path(run_dir)
    if run.is_file():  # RUN_DIR/checkpoints/x.pt -> RUN_DIR
        run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
    if not (run / "tb").is_dir():
        return []
    from torch.utils.tensorboard import SummaryWriter

    step = int(load_checkpoint(resolve_checkpoint_path(run_dir, checkpoint)).get("step", 0))
    values = score_scalars(scores, tag)
    with SummaryWriter(str(run / "tb")) as w:
        for name, v in values.items():
            w.add_scalar(name, v, step)
    return sorted(values)
