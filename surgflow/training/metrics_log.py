"""What a run records: log.txt (and stderr), metrics.csv (one row per epoch) and TensorBoard.

Only rank 0 writes; on other ranks every method is a no-op, so the trainer calls them everywhere.
metrics.csv is rewritten atomically from all rows at each epoch end (a crash never leaves half a row).
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from surgflow.evaluation.diagnostics import validation_trend
from surgflow.io_utils import atomic_write_text
from surgflow.training.checkpoint import flatten
from surgflow.training.validation import lower_is_better

RIBBON_VIDEOS = 4  # validation videos shown as phase ribbons in TensorBoard


class MetricsLogger:
    def __init__(self, out: Path, is_main: bool):
        self.out, self.is_main = Path(out), is_main
        self.rows: list[dict] = []
        self.tb = None
        self._file = None
        self.watch = "val/accuracy"  # validation metric whose fall past its best the log reports

    @property
    def csv_path(self) -> Path:
        return self.out / "metrics.csv"

    def open(self) -> None:
        """log.txt in append mode (a resumed run continues the same log)."""
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._file = open(self.out / "log.txt", "a", encoding="utf-8")

    def open_tensorboard(self, purge_step: Optional[int] = None):
        """TensorBoard writer in out/tb; on resume, events after `purge_step` are dropped."""
        if self.is_main and self.tb is None:
            from torch.utils.tensorboard import SummaryWriter  # heavy: tensorboard, only with tb/ on

            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=purge_step)
        return self.tb

    # ---- log.txt ----
    def log(self, msg: str) -> None:
        """A timestamped line on stderr and in log.txt."""
        if not self.is_main:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """A line in log.txt only (per-step lines would flood the terminal)."""
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    # ---- metrics.csv + TensorBoard ----
    def resume_rows(self, epoch: float) -> None:
        """Keep the rows of epochs <= `epoch` from an interrupted run's metrics.csv."""
        if self.is_main and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if float(r["epoch"]) <= epoch]

    def restore_row(self, row: dict, step: int) -> bool:
        """A resumed run's checkpoint row (kept in last.pt): appended to metrics.csv when the
        interrupted run did not write it (returns True), its floats to TensorBoard either way."""
        if not self.is_main:
            return False
        if any(float(r["epoch"]) == float(row["epoch"]) for r in self.rows):
            self.scalars({k: v for k, v in row.items()
                          if isinstance(v, float) and k not in ("epoch", "step")}, step)
            return False
        self.write_row(row, step)
        return True

    def write_row(self, row: dict, step: int) -> None:
        """Append one epoch row to metrics.csv (rewritten atomically) and its floats to TensorBoard."""
        if not self.is_main:
            return
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.csv_path, buf.getvalue())
        self._warn_if_falling()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, float) and k not in ("epoch", "step") and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def _warn_if_falling(self) -> None:
        """A log line when validation is past its best and still falling (overfitting shows)."""
        pts = [(float(r["epoch"]), float(r[self.watch])) for r in self.rows if r.get(self.watch) not in (None, "")]
        if pts:
            note = validation_trend([v for _, v in pts], [e for e, _ in pts], self.watch,
                                    not lower_is_better(self.watch))
            if note:
                self.log(f"WARNING: validation past its best and still falling: {note}")

    def scalars(self, values: dict, step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def config(self, cfg_dict: dict, yaml_text: str, metrics: list[str]) -> None:
        """The resolved config as text and as hparams (TensorBoard's HPARAMS tab pairs them with
        the `metrics` scalars of this run)."""
        if self.tb is None:
            return
        from torch.utils.tensorboard.summary import hparams  # heavy: tensorboard, only with tb/ on

        self.tb.add_text("config", "\n".join("    " + line for line in yaml_text.splitlines()))
        flat = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
                for k, v in flatten(cfg_dict).items()}
        for summary in hparams(flat, {m: float("nan") for m in metrics}):
            self.tb.file_writer.add_summary(summary)

    def ribbons(self, phases: dict, num_phases: int, step: int) -> None:
        """A phase-ribbon image (ground truth above prediction) per validation video."""
        if self.tb is None:
            return
        for video in list(phases)[:RIBBON_VIDEOS]:
            gt, pred = phases[video]
            self.tb.add_image(f"val_ribbon/{video}", ribbon_image(gt, pred, num_phases), step,
                              dataformats="HWC")
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


def ribbon_image(gt: np.ndarray, pred: np.ndarray, num_phases: int, row: int = 12) -> np.ndarray:
    """uint8 [2 * row + 2, N, 3]: ground truth (top) and prediction (bottom), one column per
    frame, phase colours from matplotlib's tab10/tab20; unlabelled frames light grey."""
    from matplotlib import colormaps  # heavy: matplotlib, only for the ribbon images

    cmap = colormaps["tab10" if num_phases <= 10 else "tab20"]
    colors = np.vstack([[[230, 230, 230]], (np.array([cmap(i)[:3] for i in range(num_phases)])
                                            * 255)]).astype(np.uint8)
    g = colors[np.asarray(gt, dtype=np.int64).clip(-1, num_phases - 1) + 1]  # [N, 3]
    p = colors[np.asarray(pred, dtype=np.int64).clip(-1, num_phases - 1) + 1]
    gap = np.full((2, len(g), 3), 255, np.uint8)
    return np.concatenate([np.repeat(g[None], row, 0), gap, np.repeat(p[None], row, 0)])

