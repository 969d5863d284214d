"""SurgflowModel: preprocessing + per-frame CNN backbone + temporal head + task layers.

    frames [B, T, 3, H, W] in [0, 1]
      -> normalise (backbone's mean/std)            [B*T, 3, H, W]
      -> backbone (timm, classifier removed)        [B*T, D] -> [B, T, D]     features()
      -> temporal head (state carried per lane)     [B, T, D_h]               temporal()
      -> dropout -> task layers                     {"phase": [B, T, P], ...}

The CNN sees frames one by one (batch-coupling through BatchNorm aside, see backbones.py);
only the temporal head mixes time, so the model is causal iff the head is.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from surgflow.io_utils import SurgflowError
from surgflow.models.backbones import Backbone, build_backbone
from surgflow.models.heads import HEADS, TemporalHead, build_head
from surgflow.models.tasks import Task, build_task

DEFAULT_SIZE = (216, 384)  # paper's input size (H, W)


class SurgflowModel(nn.Module):
    def __init__(self, backbone: Backbone, head: TemporalHead, tasks: dict[str, Task],
                 size: Sequence[int] = DEFAULT_SIZE, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.drop = nn.Dropout(dropout)
        self.tasks = nn.ModuleDict(tasks)
        # buffers, so a checkpoint restores them and .to(device) moves them
        self.register_buffer("pixel_mean", torch.tensor(backbone.mean, dtype=torch.float32))  # [3]
        self.register_buffer("pixel_std", torch.tensor(backbone.std, dtype=torch.float32))  # [3]
        self.register_buffer("input_size", torch.tensor(list(size), dtype=torch.long))  # [2] (H, W)

    # -- properties ------------------------------------------------------------------------------
    @property
    def is_causal(self) -> bool:
        return bool(self.head.causal)

    @property
    def preprocess(self) -> dict:
        return {"mean": self.pixel_mean.tolist(), "std": self.pixel_std.tolist(),
                "size": self.input_size.tolist()}

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    # -- state -----------------------------------------------------------------------------------
    def init_state(self, batch, device=None, dtype=torch.float32) -> tuple:
        """batch: the number of lanes B, or a Batch / frames tensor to read B from."""
        if not isinstance(batch, int):
            frames = getattr(batch, "frames", batch)
            batch = int(frames.shape[0])
        return self.head.init_state(batch, device, dtype)

    def detach_state(self, state) -> tuple:
        return () if state is None else self.head.detach(state)

    # -- forward ---------------------------------------------------------------------------------
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]
        x = frames.flatten(0, 1)  # [B*T, 3, H, W]
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = (x - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)
        f = self.backbone(x)  # [B*T, D]
        return f.view(B, T, -1)  # [B, T, D]

    def temporal(self, feats: torch.Tensor, state=None, new_video=None, valid=None):
        """valid: bool [B, T] (False on a lane's padding), for offline heads; None = all valid.

        The head runs in fp32 with autocast off: its carried state stays fp32 across chunks (bf16
        would round it at every chunk boundary), and CPU oneDNN has no bf16 LSTM."""
        with torch.autocast(feats.device.type, enabled=False):
            state = None if state is None else tuple(s.float() for s in state)
            h, state = self.head(feats.float(), state, new_video, valid)  # [B, T, D_h], tuple
        h = self.drop(h)
        outputs = {}
        for task in self.tasks.values():
            outputs.update(task(h))  # e.g. "phase": [B, T, P]
        return outputs, state

    def forward(self, frames: torch.Tensor, state=None, new_video=None, valid=None):
        return self.temporal(self.features(frames), state, new_video, valid)

    # -- training and decoding -------------------------------------------------------------------
    def loss(self, outputs: dict, batch):
        """-> (total, {name: detached value}); total = sum of the per-task losses."""
        total, logs = None, {}
        for name, task in self.tasks.items():
            parts = task.loss(outputs, batch)
            total = parts[name] if total is None else total + parts[name]
            logs.update({k: v.detach() for k, v in parts.items()})
        logs["loss"] = total.detach()
        return total, logs

    def decode(self, outputs: dict) -> dict:
        out = {}
        for task in self.tasks.values():
            out.update(task.decode(outputs))
        return out


def build_model(cfg, num_phases: int, num_tools: int = 0, num_instruments: int = 0,
                phase_counts=None, size: Optional[Sequence[int]] = None,
                load_pretrained: bool = True, **task_inputs) -> SurgflowModel:
    """cfg: surgflow.config.Config. phase_counts: training label counts for median-frequency
    weights (ignored when task.phase_weights is set; uniform weights when both are missing);
    with task_inputs: what tasks.task_training_inputs returns, passed to every task's from_config.
    size: input (H, W) recorded in model.preprocess (default 216x384; a checkpoint restores it).
    load_pretrained=False skips model.pretrained (rebuilding a model whose checkpoint holds all
    weights: no download, no need for the original weights file)."""
    m = cfg.model
    head_cls = HEADS.get(m.head)
    if not head_cls.causal and cfg.task.online:
        raise SurgflowError(f"head '{m.head}' is not causal; set task.online: false for offline analysis")
    backbone = build_backbone(m.backbone, norm=m.norm,
                              pretrained=m.pretrained if load_pretrained else False,
                              freeze_stages=m.freeze_stages, gn_groups=m.gn_groups,
                              channels_last=cfg.train.channels_last,
                              drop_path_rate=m.drop_path_rate)
    head = build_head(m.head, backbone.feature_dim, m)
    tasks = {name: build_task(name, head.out_dim, cfg.task, num_phases, num_tools, num_instruments,
                              phase_counts, **task_inputs)
             for name in cfg.task.tasks}
    return SurgflowModel(backbone, head, tasks, size or DEFAULT_SIZE, m.dropout)
