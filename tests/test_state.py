"""One run state (issue 22, item 3): TrainState owns progress, best (with its recent window), the
running epoch statistics, the pending strategy state, the metrics row and the RNGs, and round-trips
through state_dict()/load_state_dict()."""
from __future__ import annotations

import random

import numpy as np
import torch

from surgflow.training.state import PER_RANK_KEYS, SHARED_KEYS, TrainState, new_running


class FakeStrategy:
    """A strategy's resume interface: start_epoch resets, state_dict/load_state_dict."""

    def __init__(self):
        self.carry, self.started = None, []

    def start_epoch(self, epoch):
        self.started.append(epoch)
        self.carry = None

    def state_dict(self):
        return {"carry": self.carry}

    def load_state_dict(self, d):
        self.carry = d.get("carry")


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def _mid_epoch_state() -> TrainState:
    s = TrainState(FakeStrategy(), {"augment": torch.Generator().manual_seed(3)}, "val/f1")
    s.start_epoch(0)
    s.strategy.carry = [torch.arange(4.0)]
    for v in (0.5, 0.7):
        s.count_step({"phase": v}, frames=10, grad_norm=1.5)
    assert s.record_validation(0.6, 1, False, 0.5)
    s.count_step({"phase": 0.9}, frames=4, grad_norm=0.5)
    return s


def test_state_dict_round_trip_is_equal():
    a = _mid_epoch_state()
    saved = a.state_dict()
    assert set(saved) == set(SHARED_KEYS) | set(PER_RANK_KEYS)
    assert saved["step"] == 3 and saved["step_in_epoch"] == 3 and saved["best"]["recent"] == [0.6]
    assert saved["running"] == {"sums": {"phase": 0.5 * 10 + 0.7 * 10 + 0.9 * 4}, "frames": 24,
                                "grad_norm": 3.5, "n": 3}
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # moved on: the load sets them back
    b = TrainState(FakeStrategy(), {"augment": torch.Generator()}, "val/f1")
    b.load_state_dict(saved)
    assert equal(b.state_dict(), saved)
    assert torch.equal(b.generators["augment"].get_state(), a.generators["augment"].get_state())
    # the strategy state waits for start_epoch (whose reset comes first), then is the saved one
    assert b.pending_strategy is not None and b.strategy.carry is None
    b.start_epoch(0)
    assert b.pending_strategy is None and equal(b.strategy.carry, [torch.arange(4.0)])
    assert b.running == saved["running"]  # the resumed epoch continues its sums


def test_saved_dict_is_a_copy():
    a = _mid_epoch_state()
    saved = a.state_dict()
    a.count_step({"phase": 1.0}, frames=1, grad_norm=1.0)
    a.record_validation(0.9, 1, False, 1.0)
    assert saved["step"] == 3 and saved["best"]["recent"] == [0.6] and saved["running"]["n"] == 3


def test_epoch_boundary_and_older_checkpoints_start_fresh():
    a = _mid_epoch_state()
    a.finish_epoch()
    a.metrics_row = {"epoch": 1.0, "step": a.step}
    saved = a.state_dict()
    b = TrainState(FakeStrategy(), {}, "val/f1")
    b.load_state_dict({**saved, "best": None})  # an older checkpoint without best
    assert b.best == {"recent": [], "metric": "val/f1", "value": None, "epoch": None, "step": None}
    assert b.metrics_row == saved["metrics_row"]
    assert "carry" not in b.pending_strategy and b.running == new_running()  # an epoch starts fresh
    c = TrainState(FakeStrategy(), {}, "val/f1")
    c.load_state_dict({**_mid_epoch_state().state_dict(), "running": {"sums": {"x": 1.0}, "n": 2}})
    assert c.running == new_running()  # per-step sums of an older surgflow cannot continue
    c.count_step({}, 1, 0.0)
    assert c.metrics_row is None  # a step leaves the epoch's end: no row for this position


def test_best_window_mean_decides():
    s = TrainState(FakeStrategy(), {}, "val/loss")
    assert not s.record_validation(1.0, 2, True, 1.0)  # one value: too few for the window
    assert s.record_validation(0.8, 2, True, 2.0) and s.best["value"] == 0.9
    assert not s.record_validation(float("nan"), 2, True, 3.0) and s.best["recent"] == [1.0, 0.8]
    assert not s.record_validation(1.4, 2, True, 3.0)  # mean 1.1 is worse (lower is better)
    s.forget_best()
    assert s.best["value"] is None and s.best["recent"] == [0.8, 1.4]
