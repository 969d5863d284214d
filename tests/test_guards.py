"""Guardrails: the BN pitfall warning at train start and the eval-mode / cheat helpers."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from surgflow.audit.guards import (NON_CAUSAL, bn_pitfall_warning, require_eval_mode,  # noqa: E402
                                   set_eval_mode)
from surgflow.config import from_dict  # noqa: E402
from surgflow.io_utils import SurgflowError  # noqa: E402
from surgflow.models.model import build_model  # noqa: E402




def setup(backbone="test_resnet", norm="native", strategy="carry_hidden", seq_len=8, online=True,
          tasks=("anticipation",), batch_size=1, dropout=0.0):
    cfg = from_dict({"model": {"backbone": backbone, "norm": norm, "hidden": 8, "dropout": dropout},
                     "task": {"tasks": list(tasks), "online": online},
                     "train": {"strategy": strategy, "seq_len": seq_len, "batch_size": batch_size}})
    return build_model(cfg, num_phases=7, num_tools=7, num_instruments=5), cfg


@pytest.mark.parametrize("strategy", ["carry_hidden", "clips", "full_context"])
def test_warns_for_bn_with_consecutive_frames(strategy):
    model, cfg = setup(strategy=strategy)
    w = bn_pitfall_warning(model, cfg)
    assert w is not None
    assert "BatchNorm pitfall" in w and "future" in w and "cheat" in w and "anticipation" in w
    for alt in ("model.norm=frozen_bn", "model.norm=gn", "BN-free", "weaken"):
        assert alt in w
    assert strategy in w and "8 consecutive frames" in w


def test_clips_mixing_mentioned():
    model, cfg = setup(strategy="clips", batch_size=4)
    assert "Mixing 4 clips per batch weakens" in bn_pitfall_warning(model, cfg)


@pytest.mark.parametrize("kwargs", [
    dict(norm="frozen_bn"),
    dict(norm="gn"),
    dict(backbone="test_convnext"),
    dict(backbone="test_nfnet"),
    dict(online=False),
    dict(seq_len=1),
    dict(strategy="two_stage"),
])
def test_no_warning_when_safe(kwargs):
    model, cfg = setup(**kwargs)
    assert bn_pitfall_warning(model, cfg) is None


def test_eval_mode_helpers():
    model, _ = setup(dropout=0.5)
    model.train()
    with pytest.raises(SurgflowError, match="--cheat"):
        require_eval_mode(model, cheat=False)
    set_eval_mode(model)
    require_eval_mode(model, cheat=False)
    assert not model.training
    # cheat: BatchNorm in train mode (batch statistics), dropout stays off -> deterministic
    set_eval_mode(model, cheat=True)
    require_eval_mode(model, cheat=True)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)
    assert not model.drop.training
    x = torch.rand(1, 4, 3, 32, 32)
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x)
    assert torch.equal(a["anticipation"], b["anticipation"])
    assert NON_CAUSAL == "NON-CAUSAL"
