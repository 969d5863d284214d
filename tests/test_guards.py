"""Guardrail: the BN pitfall warning at train start."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from surgflow.audit.guards import bn_pitfall_warning  # noqa: E402
from surgflow.config import from_dict  # noqa: E402
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
