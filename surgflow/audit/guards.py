"""Guardrails against BatchNorm's pitfalls (DOMAIN.md section 2) in training and evaluation.

- `bn_pitfall_warning(model, cfg)`: the trainer prints it at start when an online task combines
  BatchNorm in train mode with batches of consecutive frames of one video.
- `set_eval_mode(model, cheat)` / `require_eval_mode(model, cheat)`: evaluation is causal only in
  eval mode; train-mode ("cheat") evaluation must be asked for and is then marked NON-CAUSAL.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from surgflow.io_utils import SurgflowError

# Marker for every output (terminal, JSON, plot titles) of a train-mode ("cheat") evaluation.
NON_CAUSAL = "NON-CAUSAL"
CHEAT_NOTE = ("NON-CAUSAL: evaluated with BatchNorm in train mode (--cheat): each frame is "
              "normalised with statistics of its batch, which includes later frames; these scores "
              "are not achievable online")



def consecutive_strategies() -> tuple[str, ...]:
    """Strategies whose batches hold consecutive frames of one video (declared by each strategy)."""
    from surgflow.registry import STRATEGIES

    return tuple(n for n, cls in STRATEGIES.items() if cls.consecutive_frames)


def batchnorm_train_layers(model: nn.Module) -> list[str]:
    """Names of the normalisation layers that use batch statistics in train mode."""
    from surgflow.audit.audit import inventory

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
    tasks = list(getattr(task, "tasks", []))
    where = "anticipation" if "anticipation" in tasks else "online recognition"
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


def _is_stochastic(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ in ("DropPath", "DropBlock2d")


def set_eval_mode(model: nn.Module, cheat: bool = False) -> nn.Module:
    """Eval mode for evaluation; with cheat=True, train mode for normalisation layers only
    (dropout and stochastic depth stay off), i.e. BatchNorm uses the statistics of each batch."""
    if not cheat:
        return model.eval()
    model.train()
    for m in model.modules():
        if _is_stochastic(m):
            m.eval()
    return model


def require_eval_mode(model: nn.Module, cheat: bool = False) -> None:
    """Raise unless `model` is in the mode evaluation asked for: fully in eval mode, or, with an
    explicit cheat=True, BatchNorm in train mode (the result must then be marked NON-CAUSAL)."""
    training = [n for n, m in model.named_modules() if m.training and not _is_stochastic(m)]
    if not cheat and training:
        raise SurgflowError(
            f"evaluation must run in eval mode, but {len(training)} module(s) are in train mode "
            f"(e.g. '{training[0] or type(model).__name__}'); call model.eval(), or pass --cheat to "
            "evaluate BatchNorm in train mode on purpose (results are then marked NON-CAUSAL)")
