"""TrainState: the one object that holds a run's progress and what an exact resume needs besides
the weights, the optimiser and the learning-rate schedule (which are their own state dicts).

    epoch, step, step_in_epoch   where the run is (step_in_epoch: the sampler skips to it)
    best                         {metric, value, epoch, step, recent}: the best validation so far;
                                 recent = the last train.best_window values (their mean decides)
    running                      this rank's epoch statistics so far (a resumed epoch logs all
                                 its steps): {sums: losses weighted by valid frames, frames,
                                 grad_norm (sum), n (steps)}
    metrics_row                  the metrics.csv row of this position (set at an epoch's end or
                                 at train.max_steps, None mid-epoch): a checkpoint carries it so a
                                 stop between the checkpoint and metrics.csv loses nothing
    strategy                     the strategy's state (carried temporal state); after a load it
                                 is pending until the next start_epoch (whose reset comes first)
    rng                          this rank's RNG states (torch, numpy, python, the augmentation's)

Like every stateful part of a checkpoint (model, optimizer, scheduler, as torchtitan's
checkpointer treats them) it has state_dict()/load_state_dict(); training/checkpoint.py writes
the shared keys once and the per-rank keys (PER_RANK_KEYS) as lists over the ranks.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch

from surgflow.training.runtime import get_rng_state, set_rng_state

# keys of state_dict() that are equal on every rank (saved once) and that differ per rank
SHARED_KEYS = ("epoch", "step", "step_in_epoch", "best", "metrics_row")
PER_RANK_KEYS = ("rng", "strategy", "running")


def new_running() -> dict:
    """An epoch's running statistics: loss sums weighted by valid frames, the frames, the
    gradient-norm sum and the steps."""
    return {"sums": {}, "frames": 0, "grad_norm": 0.0, "n": 0}


class TrainState:
    def __init__(self, strategy, generators: dict[str, torch.Generator], best_metric: str):
        self.strategy, self.generators = strategy, dict(generators)
        self.epoch, self.step, self.step_in_epoch = 0, 0, 0
        self.best: dict = {"metric": best_metric, "value": None, "epoch": None, "step": None,
                           "recent": []}
        self.running: dict = new_running()
        self.metrics_row: Optional[dict] = None
        self.pending_strategy: Optional[dict] = None  # loaded, applied at the next start_epoch
        self._continue_running = False  # running was restored mid-epoch: the epoch continues it

    # ---------------------------------------------------------------- state dict
    def state_dict(self) -> dict:
        strategy = (self.pending_strategy if self.pending_strategy is not None
                    else self.strategy.state_dict())
        return {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                "best": {**self.best, "recent": list(self.best.get("recent") or [])},
                "metrics_row": copy.copy(self.metrics_row),
                "rng": get_rng_state(self.generators), "strategy": strategy,
                "running": {**self.running, "sums": dict(self.running["sums"])}}

    def load_state_dict(self, d: dict) -> None:
        """`d`: state_dict()'s keys for this rank; `rng` None (another world size: the streams
        restart), `running` None (cannot continue) and a missing `best` (older checkpoint) are
        allowed."""
        self.epoch, self.step, self.step_in_epoch = d["epoch"], d["step"], d["step_in_epoch"]
        self.best = {"recent": [], **dict(d.get("best") or self.best)}
        self.metrics_row = d.get("metrics_row")
        if d.get("rng") is not None:
            set_rng_state(d["rng"], self.generators)
        pending = dict(d.get("strategy") or {})
        running = d.get("running")
        if self.step_in_epoch == 0:  # an epoch starts with fresh states
            pending.pop("carry", None)
            running = None
        self.pending_strategy = pending
        # sums of an older surgflow (per step, not per frame) cannot continue: logged from here
        self._continue_running = bool(running and "frames" in running)
        self.running = ({**running, "sums": dict(running["sums"])} if self._continue_running
                        else new_running())

    # ---------------------------------------------------------------- progress
    def start_epoch(self, epoch: int) -> None:
        """The strategy's epoch start, then the resumed strategy state (once); fresh running
        statistics unless a resumed epoch continues."""
        self.strategy.start_epoch(epoch)
        if self.pending_strategy is not None:  # resumed: restore after start_epoch's reset
            self.strategy.load_state_dict(self.pending_strategy)
            self.pending_strategy = None
        if not self._continue_running:
            self.running = new_running()
        self._continue_running = False

    def count_step(self, logs: dict, frames: int, grad_norm: float) -> None:
        """One optimiser step done: counters, and its losses weighted by its valid frames (an
        idle step counts 0 frames, not a loss of 0); the position is mid-epoch: no metrics row."""
        self.step += 1
        self.step_in_epoch += 1
        self.metrics_row = None
        sums = self.running["sums"]
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v * frames
        self.running["frames"] += frames
        self.running["grad_norm"] += grad_norm
        self.running["n"] += 1

    def finish_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def record_validation(self, value: Optional[float], window: int, lower_is_better: bool,
                          epoch_done: float) -> bool:
        """A validation value of best.metric (None: not computed); True when the mean of the last
        `window` values is a new best (recorded at this step)."""
        if value is None or not math.isfinite(value):
            return False
        recent = (list(self.best.get("recent") or []) + [float(value)])[-window:]
        self.best["recent"] = recent
        if len(recent) < window:
            return False  # too few validations for the window yet
        v, old = sum(recent) / window, self.best.get("value")
        better = old is None or (v < old if lower_is_better else v > old)
        if better:
            self.best.update(value=float(v), epoch=epoch_done, step=self.step)
        return better

    def forget_best(self) -> None:
        """The recorded best's checkpoint is lost: the next validation writes a new best.pt."""
        self.best.update(value=None, epoch=None, step=None)
