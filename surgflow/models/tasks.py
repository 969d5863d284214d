"""Tasks: output layers, losses and decoding on top of the temporal head's features.

    phase         linear -> P logits; weighted cross-entropy (median-frequency weights unless
                  task.phase_weights is given), frames labelled -1 ignored
    tools         linear -> K logits; multi-label BCE-with-logits
    anticipation  linear -> I normalised regressions (minutes / h) + linear -> I x 3 class logits;
                  SmoothL1(reg, y/h) + task.anticipation_ce_weight x CE(cls, {0 present,
                  1 outside horizon, 2 inside horizon}), both summed over instruments
Every loss is averaged over valid frames only (batch.valid False = padding).

A task is a plugin: its class says which dataset labels it needs (`check_dataset`), its target
(`target`), its layers, loss and decoding, and names its evaluation (`evaluation`: validation
metrics, prediction files, scorer, tables; the built-in ones are TaskEvaluations in
evaluation/score.py). Callers loop over the configured tasks (`ordered`) and never name one. A task
holds its own settings (horizon, weights): no method reads the Config.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from surgflow.io_utils import SurgflowError
from surgflow.labels import IGNORE_INDEX
from surgflow.registry import TASKS  # entries: task classes; TASKS.build(name, in_dim, task_cfg, **dims)


def median_frequency_weights(counts: Sequence[int]) -> np.ndarray:
    """w_c = median(freq) / freq_c over the classes present (freq_c = count_c / total).
    Classes absent from the training labels get weight 1.0 (they never occur in its loss)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise SurgflowError(f"phase counts must be a 1-D array of non-negative counts, got {counts}")
    present = counts > 0
    if not present.any():
        raise SurgflowError("the training subset has no phase labels; cannot compute median-frequency "
                            "weights (give task.phase_weights)")
    freq = counts / counts.sum()
    weights = np.ones_like(freq)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


def _field(batch, name):
    return batch[name] if isinstance(batch, dict) else getattr(batch, name)


def _masked_mean(per_frame: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """per_frame [B, T] -> mean over valid frames (0 with a graph if none is valid)."""
    mask = valid.to(per_frame.dtype)
    return (per_frame * mask).sum() / mask.sum().clamp_min(1.0)


class Task(nn.Module):
    """Registered tasks build with `from_config(in_dim, task_cfg, num_phases=, num_tools=,
    num_instruments=, phase_counts=None)` (task_cfg: the Config's `task` section; each reads its
    own settings there and keeps them: loss() takes no config)."""
    name: str
    output_keys: tuple
    # The task's evaluation (validation metrics, prediction files, scorer, tables): an object, or
    # "module:attribute" resolved on first use, so this layer does not import surgflow.evaluation.
    evaluation: object = None
    # True where a frame's target depends on later frames (BatchNorm can leak them: guards.py)
    target_reads_future: bool = False
    # where the task's scores, metrics and files come among the others (then by name)
    order: int = 100

    @classmethod
    def check_dataset(cls, task_cfg, ds, where: str) -> dict:
        """Raise SurgflowError when `ds` lacks the labels this task needs (task_cfg: the Config's
        `task` section); returns what the sampler must load for it ({"instruments": [...]})."""
        return {}

    @classmethod
    def training_inputs(cls, train_ds) -> dict:
        """What `from_config` takes from the training subset (a PreparedDataset), as keyword
        arguments merged over the configured tasks (`task_training_inputs`): phase's label counts
        for its class weights. Read before the model is built; {} when the task needs nothing."""
        return {}

    def run_meta(self) -> dict:
        """RunMeta fields this built task layer fixes ({"horizon": h} for anticipation): what a
        checkpoint whose meta and config lack them takes from its model (runs.RunMeta.from_dict)."""
        return {}

    def target(self, batch) -> torch.Tensor:
        """This task's target of a samplers.Batch ([B, T, ...])."""
        return _field(batch, self.name)

    def loss_denominator(self, batch) -> float:
        """What the loss averages over (DDP weights ranks by it): the valid frames."""
        return float(_field(batch, "valid").sum())

    def loss(self, outputs: dict, batch) -> dict:
        """{self.name: loss to add, other names: detached logs}; the task's settings are those it
        was built with."""
        raise NotImplementedError

    def decode(self, outputs: dict) -> dict:
        raise NotImplementedError


def ordered(names) -> list[str]:
    """`names` by Task.order, then name (phase, tools, anticipation, then plugins): scores,
    metrics and files keep one order whatever the config lists first."""
    return sorted(names, key=lambda n: (TASKS.get(n).order, n))


def check_task_labels(tasks, task_cfg, ds, where: str) -> list[str]:
    """Each task needs labels the dataset has (an error names the task and the missing labels);
    returns the anticipation instruments the sampler must load ([] when no task needs any)."""
    needs: dict = {}
    for name in ordered(tasks):
        needs.update(TASKS.get(name).check_dataset(task_cfg, ds, where))
    return list(needs.get("instruments", []))


def task_training_inputs(tasks, train_ds) -> dict:
    """The tasks' `training_inputs` over the training subset, merged: build_model's keyword
    arguments for the task layers ({"phase_counts": int64 [P]} when phase is configured)."""
    inputs: dict = {}
    for name in ordered(tasks):
        inputs.update(TASKS.get(name).training_inputs(train_ds))
    return inputs


@TASKS.register("phase")
class PhaseTask(Task):
    name, output_keys, order = "phase", ("phase",), 0
    evaluation = "surgflow.evaluation.score:PHASE"

    @classmethod
    def check_dataset(cls, task_cfg, ds, where):
        if not ds.phase_names:
            raise SurgflowError(f"task.tasks: 'phase' needs phase labels but {where} has none")
        return {}

    @classmethod
    def training_inputs(cls, train_ds):
        return {"phase_counts": train_ds.phase_counts()}  # median-frequency class weights

    def __init__(self, in_dim: int, num_phases: int, weights: Optional[Sequence[float]] = None):
        super().__init__()
        if num_phases <= 0:
            raise SurgflowError("task 'phase' needs phase labels but the dataset has no phases")
        self.fc = nn.Linear(in_dim, num_phases)
        w = torch.ones(num_phases) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.register_buffer("class_weights", w.float())  # saved with the model

    @classmethod
    def from_config(cls, in_dim, task_cfg, num_phases=0, phase_counts=None, **_dims) -> "PhaseTask":
        weights = task_cfg.phase_weights
        if weights is not None:
            if len(weights) != num_phases:
                raise SurgflowError(f"task.phase_weights: {len(weights)} weights for {num_phases} phases")
        elif phase_counts is not None:
            if len(phase_counts) != num_phases:
                raise SurgflowError(f"phase_counts: {len(phase_counts)} counts for {num_phases} phases")
            weights = median_frequency_weights(phase_counts)
        return cls(in_dim, num_phases, weights)

    def forward(self, h):  # h [B, T, H]
        return {"phase": self.fc(h)}  # [B, T, P]

    def loss(self, outputs, batch):
        logits = outputs["phase"].float()  # [B, T, P]
        target = self.target(batch).to(logits.device)  # [B, T]
        valid = _field(batch, "valid").to(logits.device)
        target = torch.where(valid, target, torch.full_like(target, IGNORE_INDEX))
        w = self.class_weights.to(logits.device)
        ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), weight=w,
                             ignore_index=IGNORE_INDEX, reduction="sum")
        labelled = target.flatten() != IGNORE_INDEX
        denom = w[target.flatten().clamp_min(0)][labelled].sum()  # weighted mean as in PyTorch
        return {"phase": ce / denom.clamp_min(1e-12)}

    def loss_denominator(self, batch) -> float:
        """The class weights of the labelled valid frames (weighted cross-entropy's mean)."""
        valid = _field(batch, "valid")
        target = self.target(batch).to(valid.device)
        labelled = valid & (target >= 0)
        return float(self.class_weights.to(valid.device)[target[labelled]].double().sum())

    def decode(self, outputs):
        return {"phase_prob": outputs["phase"].float().softmax(-1)}


@TASKS.register("tools")
class ToolsTask(Task):
    name, output_keys, order = "tools", ("tools",), 1
    evaluation = "surgflow.evaluation.score:TOOLS"

    @classmethod
    def check_dataset(cls, task_cfg, ds, where):
        if not ds.tool_names:
            raise SurgflowError(f"task.tasks: 'tools' needs tool labels but {where} has none "
                                f"(tool_names is empty); remove 'tools' from task.tasks")
        return {}

    def __init__(self, in_dim: int, num_tools: int):
        super().__init__()
        if num_tools <= 0:
            raise SurgflowError("task 'tools' needs tool labels but the dataset has none "
                                "(remove 'tools' from task.tasks)")
        self.fc = nn.Linear(in_dim, num_tools)

    @classmethod
    def from_config(cls, in_dim, task_cfg, num_tools=0, **_dims) -> "ToolsTask":
        return cls(in_dim, num_tools)

    def forward(self, h):
        return {"tools": self.fc(h)}  # [B, T, K]

    def loss(self, outputs, batch):
        logits = outputs["tools"].float()
        target = self.target(batch).to(logits.device, torch.float32)  # [B, T, K]
        valid = _field(batch, "valid").to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)  # [B, T]
        return {"tools": _masked_mean(bce, valid)}

    def decode(self, outputs):
        return {"tools_prob": outputs["tools"].float().sigmoid()}


@TASKS.register("anticipation")
class AnticipationTask(Task):
    name, output_keys, order = "anticipation", ("anticipation", "anticipation_cls"), 2
    evaluation = "surgflow.evaluation.score:ANTICIPATION"
    target_reads_future = True  # minutes until the next use: the future's labels

    @classmethod
    def check_dataset(cls, task_cfg, ds, where):
        if not ds.tool_names:
            raise SurgflowError(f"task.tasks: 'anticipation' needs tool-presence labels but {where} "
                                f"has none (tool_names is empty)")
        missing = [i for i in task_cfg.instruments if i not in ds.tool_names]
        if missing or not task_cfg.instruments:
            raise SurgflowError(f"task.instruments: {missing or '[]'} not among the tools of {where} "
                                f"({', '.join(ds.tool_names)}); choose a non-empty subset")
        return {"instruments": list(task_cfg.instruments)}

    def __init__(self, in_dim: int, num_instruments: int, horizon: float, ce_weight: float = 0.01):
        super().__init__()
        if num_instruments <= 0:
            raise SurgflowError("task 'anticipation' needs instrument labels but the dataset has none "
                                "(check task.instruments against the dataset's tools)")
        self.reg = nn.Linear(in_dim, num_instruments)
        self.cls = nn.Linear(in_dim, num_instruments * 3)
        self.num_instruments = num_instruments
        self.horizon = float(horizon)
        self.ce_weight = float(ce_weight)

    @classmethod
    def from_config(cls, in_dim, task_cfg, num_instruments=0, **_dims) -> "AnticipationTask":
        return cls(in_dim, num_instruments, task_cfg.horizon, task_cfg.anticipation_ce_weight)

    def run_meta(self):
        return {"horizon": self.horizon}  # the layer's outputs are minutes / horizon

    def forward(self, h):
        B, T, _ = h.shape
        return {"anticipation": self.reg(h),  # [B, T, I], minutes / h
                "anticipation_cls": self.cls(h).view(B, T, self.num_instruments, 3)}

    @staticmethod
    def class_target(minutes: torch.Tensor, horizon: float) -> torch.Tensor:
        """0 present (y == 0), 1 outside the horizon (y >= h), 2 inside (0 < y < h)."""
        cls = torch.full_like(minutes, 2, dtype=torch.long)
        cls[minutes >= horizon] = 1
        cls[minutes <= 0] = 0
        return cls

    def loss(self, outputs, batch):
        h, ce_weight = self.horizon, self.ce_weight  # built from task.horizon / anticipation_ce_weight
        reg = outputs["anticipation"].float()  # [B, T, I]
        cls_logits = outputs["anticipation_cls"].float()  # [B, T, I, 3]
        minutes = self.target(batch).to(reg.device, torch.float32)  # [B, T, I]
        valid = _field(batch, "valid").to(reg.device)
        target = (minutes / h).clamp(0, 1)
        l_reg = F.smooth_l1_loss(reg, target, reduction="none").sum(-1)  # [B, T]
        ce = F.cross_entropy(cls_logits.flatten(0, 2), self.class_target(minutes, h).flatten(),
                             reduction="none").view_as(minutes).sum(-1)  # [B, T]
        l_reg, l_ce = _masked_mean(l_reg, valid), _masked_mean(ce, valid)
        return {"anticipation": l_reg + ce_weight * l_ce,
                "anticipation_reg": l_reg.detach(), "anticipation_ce": l_ce.detach()}

    def decode(self, outputs):
        return {"anticipation_min": outputs["anticipation"].float().clamp(0, 1) * self.horizon}


def build_task(name: str, in_dim: int, task_cfg, num_phases: int, num_tools: int,
               num_instruments: int, phase_counts=None, **task_inputs) -> Task:
    """task_cfg: the Config's `task` section; task_inputs: more of `task_training_inputs` (a
    plugin's); each task takes what it names."""
    return TASKS.build(name, in_dim, task_cfg, num_phases=num_phases, num_tools=num_tools,
                       num_instruments=num_instruments, phase_counts=phase_counts, **task_inputs)
