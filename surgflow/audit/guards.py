"""Guardrail against BatchNorm's pitfalls (docs/DOMAIN.md section 2) in training.

`bn_pitfall_warning(model, cfg)`: the trainer prints it at start when an online task combines
BatchNorm in train mode with batches of consecutive frames of one video. (Train-mode "cheat"
evaluation and its NON-CAUSAL marking live in evaluation/runner.py and evaluation/score.py.)
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from surgflow.audit.audit import inventory
from surgflow.registry import STRATEGIES, TASKS


def consecutive_strategies() -> tuple[str, ...]:
    """Strategies whose batches hold consecutive frames of one video (declared by each strategy)."""
    return tuple(n for n, cls in STRATEGIES.items() if cls.consecutive_frames)


def batchnorm_train_layers(model: nn.Module) -> list[str]:
    """Names of the normalisation layers that use batch statistics in train mode."""
    return [n.name for n in inventory(model) if n.uses_batch_stats_in_train]


def bn_pitfall_warning(model: nn.Module, cfg: Any) -> Optional[str]:
    """A warning text when training would hit the BN "cheating" pitfall, else None.

    Condition: online task + BatchNorm using batch statistics in train mode + batches of T > 1
    consecutive frames of one video (the strategies declaring `consecutive_frames`)."""
    task, train = cfg.task, cfg.train
    if not getattr(task, "online", True):
        return None
    strategy = getattr(train, "strategy", "")
    seq_len = int(getattr(train, "seq_len", 1))
    if strategy not in consecutive_strategies() or seq_len <= 1:
        return None
    layers = batchnorm_train_layers(model)
    if not layers:
        return None
    backbone = getattr(cfg.model, "backbone", "?")
    # name the task whose targets read the future (what cheating learns), else recognition
    future = [n for n in getattr(task, "tasks", []) if TASKS.get(n).target_reads_future]
    where = future[0] if future else "online recognition"
    mixing = ""
    if strategy == "clips" and int(getattr(train, "batch_size", 1)) > 1:
        mixing = (f" Mixing {train.batch_size} clips per batch weakens the effect but does not remove it.")
    return (
        f"BatchNorm pitfall: backbone '{backbone}' has {len(layers)} BatchNorm layer(s) that "
        f"normalise with batch statistics in train mode, and strategy '{strategy}' puts "
        f"{seq_len} consecutive frames of one video in a batch. Frame t is then normalised with "
        f"statistics that include frames after t: the model can leak the future and learn to "
        f"'cheat' in {where} (training loss looks good, eval-mode results are worse), and train-"
        f"and test-time normalisation differ.{mixing} Alternatives: model.norm=frozen_bn (keep "
        f"running statistics), model.norm=gn (GroupNorm), or a BN-free backbone "
        f"(model.backbone=convnext_tiny / resnet50_gn / nfnet_l0); more or shuffled clips per "
        f"batch (train.strategy=clips, larger train.batch_size) only weaken it. "
        f"Check a model with `surgflow audit`.")
