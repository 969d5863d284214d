"""`surgflow eval`'s scores in the run's TensorBoard folder, beside its training curves."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Callable

from surgflow.checkpoint_io import load_checkpoint
from surgflow.runs import resolve_checkpoint_path

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


def _note(text: str) -> None:
    print(f"surgflow eval: note: {text}", file=sys.stderr)


def log_eval_scores(run_dir, scores: dict, tag: str, checkpoint: str = "kept",
                    log: Callable[[str], None] = _note) -> list[str]:
    """Scores as scalars `<tag>/<task>/...` in RUN_DIR/tb at the step of the evaluated checkpoint;
    returns the tags written ([] when the run has no tb/ folder, or when tb/ cannot be written,
    e.g. a colleague's run on a read-only share or a full disk: skipped with a note via `log`,
    since the scores are already in the evaluation folder)."""
    run = Path(run_dir)
    if run.is_file():  # RUN_DIR/checkpoints/x.pt -> RUN_DIR
        run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
    if not (run / "tb").is_dir():
        return []
    skip = "the scores were not added to the run's TensorBoard; they are in the evaluation folder"
    probe = run / "tb" / f".write-test-{os.getpid()}"
    try:  # probe first: SummaryWriter writes in a background thread, its errors come too late
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        log(f"cannot write to {run / 'tb'} ({e.strerror or e}): {skip}")
        return []
    from torch.utils.tensorboard import SummaryWriter  # heavy: torch, tensorboard

    step = int(load_checkpoint(resolve_checkpoint_path(run_dir, checkpoint)).get("step", 0))
    values = score_scalars(scores, tag)
    try:
        with SummaryWriter(str(run / "tb")) as w:
            for name, v in values.items():
                w.add_scalar(name, v, step)
    except OSError as e:
        log(f"cannot write to {run / 'tb'} ({e.strerror or e}): {skip}")
        return []
    return sorted(values)
