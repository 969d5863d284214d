"""What a task takes from the training subset (`Task.training_inputs`) and what its built layer
records in the run meta (`Task.run_meta`): callers loop over the tasks and never name one (before,
training/build.py asked `"phase" in cfg.task.tasks` for the label counts and runs.py read
`tasks["anticipation"].horizon`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn

from surgflow.config import from_dict
from surgflow.labels import CHOLEC80_PHASES
from surgflow.models.model import build_model
from surgflow.models.tasks import PhaseTask, Task, task_training_inputs
from surgflow.registry import TASKS
from surgflow.runs import RunMeta

NAME = "hook_probe"


class _Subset:
    """A training subset that counts how often its phase counts are read."""

    def __init__(self, counts):
        self.counts, self.reads = np.asarray(counts, dtype=np.int64), 0

    def phase_counts(self):
        self.reads += 1
        return self.counts


class HookProbeTask(Task):
    """A plugin that asks for its own training input and records its own meta field."""
    name, output_keys = NAME, (NAME,)

    @classmethod
    def training_inputs(cls, train_ds):
        return {"probe_frames": int(train_ds.counts.sum())}

    def __init__(self, in_dim: int, probe_frames: int):
        super().__init__()
        self.fc, self.probe_frames = nn.Linear(in_dim, 1), probe_frames

    @classmethod
    def from_config(cls, in_dim, cfg, probe_frames=None, **_dims):
        assert probe_frames is not None, "build_model did not pass the task's training input"
        return cls(in_dim, probe_frames)

    def forward(self, h):
        return {NAME: self.fc(h)}

    def run_meta(self):
        return {"horizon": 7.5}  # a field RunMeta knows, fixed by this layer


@pytest.fixture
def probe_task():
    TASKS.register(NAME)(HookProbeTask)
    yield HookProbeTask
    TASKS.unregister(NAME)


def test_phase_counts_are_read_only_when_phase_is_trained():
    ds = _Subset([10, 20, 30, 40])
    assert task_training_inputs(["tools", "anticipation"], ds) == {} and ds.reads == 0
    inputs = task_training_inputs(["anticipation", "phase"], ds)
    assert list(inputs) == ["phase_counts"] and ds.reads == 1
    np.testing.assert_array_equal(inputs["phase_counts"], [10, 20, 30, 40])
    assert PhaseTask.training_inputs(ds)["phase_counts"] is ds.counts


def test_phase_weights_from_the_hook_match_the_explicit_counts():
    cfg = from_dict({"model": {"backbone": "test_convnext", "hidden": 8},
                     "task": {"tasks": ["phase"]}})
    ds = _Subset([10, 20, 30, 40])
    via_hook = build_model(cfg, 4, **task_training_inputs(cfg.task.tasks, ds))
    explicit = build_model(cfg, 4, phase_counts=[10, 20, 30, 40])
    w = via_hook.tasks["phase"].class_weights
    assert w.tolist() == explicit.tasks["phase"].class_weights.tolist() and len(set(w.tolist())) > 1


def test_a_plugin_gets_its_training_input_and_gives_its_meta(probe_task):
    cfg = from_dict({"model": {"backbone": "test_convnext", "hidden": 8},
                     "task": {"tasks": ["phase", NAME]}})
    inputs = task_training_inputs(cfg.task.tasks, _Subset([1, 2, 3, 4, 5, 6, 7]))
    assert inputs["probe_frames"] == 28 and "phase_counts" in inputs
    model = build_model(cfg, len(CHOLEC80_PHASES), **inputs)
    assert model.tasks[NAME].probe_frames == 28
    # a checkpoint whose meta and config lack the horizon takes it from the built task layers
    meta = RunMeta.from_dict({"phase_names": list(CHOLEC80_PHASES)}, model=model)
    assert meta.horizon == 7.5


def test_no_task_layer_records_a_horizon_without_anticipation():
    cfg = from_dict({"model": {"backbone": "test_convnext", "hidden": 8}, "task": {"tasks": ["phase"]}})
    model = build_model(cfg, len(CHOLEC80_PHASES))
    assert all(t.run_meta() == {} for t in model.tasks.values())
    assert RunMeta.from_dict({"phase_names": list(CHOLEC80_PHASES)}, model=model).horizon == 0.0
