"""Helpers shared by test modules (imported as `from _helpers import ...`)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from surgflow.config import from_dict, to_dict, to_yaml
from surgflow.data.augment import _GRAY, ClipAugment
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS
from surgflow.models.model import build_model
from surgflow.checkpoint_io import save_checkpoint

SIZE = (32, 56)


def make_checkpoint(path, head="lstm", online=True, size=SIZE, fps=1.0, seed=0):
    """An untrained tiny model (phase, tools, anticipation) saved through the real checkpoint API."""
    torch.manual_seed(seed)
    cfg = from_dict({"model": {"backbone": "test_convnext", "hidden": 16, "head": head,
                               "tcn_maps": 8, "tcn_layers": 3, "tcn_stages": 2},
                     "task": {"tasks": ["phase", "tools", "anticipation"], "online": online}})
    model = build_model(cfg, len(CHOLEC80_PHASES), len(CHOLEC80_TOOLS), len(ANTICIPATION_INSTRUMENTS),
                        size=size)
    meta = {"phase_names": CHOLEC80_PHASES, "tool_names": CHOLEC80_TOOLS,
            "instruments": ANTICIPATION_INSTRUMENTS, "horizon": 3.0, "fps": fps, "size": list(size),
            "preprocess": model.preprocess, "dataset_root": "", "split": "all",
            "causal": model.is_causal}
    save_checkpoint(path, {"config": to_dict(cfg), "model": model.state_dict(), "optimizer": {},
                           "epoch": 0, "step": 0, "step_in_epoch": 0, "rng": {}, "meta": meta,
                           "best": 0.0})
    if Path(path).parent.name == "checkpoints":  # a run folder: its config.yaml, as training writes
        (Path(path).parent.parent / "config.yaml").write_text(to_yaml(cfg))
    return path



class ClipMeanContrast(ClipAugment):
    """The ClipAugment of before issue 9, kept as a deliberately LEAKY augmentation for tests: contrast
    blends every frame towards the mean grey of the whole clip, so frame t depends on frames after t
    and on a lane's padding. Same random draws as ClipAugment."""

    @staticmethod
    def contrast_reference(x):
        clip = x.mean(dim=(1, 3, 4)) @ torch.tensor(_GRAY, device=x.device, dtype=x.dtype)  # [B]
        return clip[:, None].expand(x.shape[:2])  # [B, T]: pooled over time


def documented_names(registry_name: str) -> list[str]:
    """The names docs/ARCHITECTURE.md's module tree lists for a registry: `TASKS: a, b, c` or
    `NORM_MODES a|b|c`."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    m = re.search(rf"\b{registry_name}(?:: (\w+(?:, \w+)*)| (\w+(?:\|\w+)+))", doc)
    assert m, f"docs/ARCHITECTURE.md lists no {registry_name}"
    return m.group(1).split(", ") if m.group(1) else m.group(2).split("|")
