"""full_context: gradients equal plain backprop (BN-free / frozen BN), BN in train mode refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from surgflow.config import from_dict
from surgflow.io_utils import SurgflowError
from surgflow.models import build_model
from surgflow.training.full_context import full_context_step

try:
    from surgflow.data.samplers import Batch
except ImportError:  # pragma: no cover
    Batch = None


def _cfg(**model):
    base = {"backbone": "test_convnext", "hidden": 16, "tcn_layers": 3, "tcn_maps": 8}
    base.update(model)
    return from_dict({"model": base, "task": {"tasks": ["phase", "anticipation"]}})


def _batch(B=2, T=6, H=32, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 4:] = False
    fields = dict(frames=torch.randint(0, 256, (B, T, 3, H, W), dtype=torch.uint8, generator=g),
                  phase=torch.randint(-1, 7, (B, T), generator=g), tools=torch.zeros(B, T, 0),
                  anticipation=torch.rand(B, T, 5, generator=g) * 3, valid=valid,
                  new_video=torch.tensor([True, False][:B]), videos=["a", "b"][:B],
                  starts=torch.zeros(B, dtype=torch.long))
    if Batch is not None:
        return Batch(**fields)
    from types import SimpleNamespace
    return SimpleNamespace(**fields)


def _plain(model, frames, b, cfg, state):
    model.zero_grad(set_to_none=True)
    out, new_state = model(frames, state, b.new_video)
    total, _ = model.loss(out, b)
    total.backward()
    return total.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, new_state


def _full(model, frames, b, cfg, state, micro):
    model.zero_grad(set_to_none=True)
    loss, logs, new_state = full_context_step(model, frames, b, micro, state)
    return loss, logs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, new_state


def _rel(g1, g2):
    assert g1.keys() == g2.keys() and g1
    num = sum(((g1[n].double() - g2[n].double()) ** 2).sum() for n in g1) ** 0.5
    den = sum((g1[n].double() ** 2).sum() for n in g1) ** 0.5
    return float(num / den)


@pytest.mark.parametrize("head,micro", [("lstm", 3), ("tcn", 7), ("lstm", 64)])
def test_gradients_equal_plain_backprop_bn_free(head, micro):
    torch.manual_seed(0)
    cfg = _cfg(head=head)
    model = build_model(cfg, 7, 0, 5).train()
    b = _batch()
    frames = b.frames.float() / 255
    torch.manual_seed(1)
    state = tuple(torch.randn_like(s) for s in model.init_state(2))  # a carried state
    l1, g1, s1 = _plain(model, frames, b, cfg, state)
    l2, logs, g2, s2 = _full(model, b.frames, b, cfg, state, micro)  # uint8 frames accepted
    assert abs(l1 - l2) < 1e-6 and logs["loss"] == pytest.approx(l2)
    assert any(n.startswith("backbone.") for n in g2) and any(n.startswith("head.") for n in g2)
    assert _rel(g1, g2) <= 1e-5
    for a, c in zip(s1, s2):
        torch.testing.assert_close(a.detach(), c)
        assert not c.requires_grad


def test_batchnorm_in_train_mode_is_refused():
    cfg = _cfg(backbone="test_resnet")
    model = build_model(cfg, 7, 0, 5).train()
    b = _batch(T=4)
    with pytest.raises(SurgflowError, match="BatchNorm.*micro-batch.*frozen_bn"):
        full_context_step(model, b.frames, b, 2)
    model.eval()  # running statistics: recomputation is exact again
    full_context_step(model, b.frames, b, 2)


@pytest.mark.parametrize("norm", ["frozen_bn", "gn"])
def test_bn_backbone_accepted_with_frozen_bn_or_gn(norm):
    torch.manual_seed(0)
    cfg = _cfg(backbone="test_resnet", norm=norm)
    model = build_model(cfg, 7, 0, 5).train()
    b = _batch(T=6)
    frames = b.frames.float() / 255
    _, g1, _ = _plain(model, frames, b, cfg, None)
    _, _, g2, _ = _full(model, frames, b, cfg, None, 4)
    assert _rel(g1, g2) <= 1e-5


def test_frozen_stages_and_dropout_replayed():
    torch.manual_seed(0)
    cfg = _cfg(freeze_stages=2)
    model = build_model(cfg, 7, 0, 5).train()
    model.backbone.model.norm_pre = nn.Dropout(0.5)  # random inside the CNN: must be replayed
    b = _batch(T=8)
    frames = b.frames.float() / 255
    # reference: plain backprop of the same stochastic function (CNN called per micro-batch)
    torch.manual_seed(5)
    model.zero_grad(set_to_none=True)
    flat = frames.reshape(16, 1, 3, 32, 32)
    feats = torch.cat([model.features(flat[i:i + 3]) for i in range(0, 16, 3)]).view(2, 8, -1)
    out, _ = model.temporal(feats, None, b.new_video)
    model.loss(out, b)[0].backward()
    g1 = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.manual_seed(5)
    _, _, g2, _ = _full(model, frames, b, cfg, None, 3)
    assert not any(n.startswith("backbone.model.stages.0.") for n in g2)
    assert any(n.startswith("backbone.model.stages.3.") for n in g2)
    assert _rel(g1, g2) <= 1e-5


def test_autocast_passes_through():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg, 7, 0, 5).train()
    b = _batch(T=6)
    frames = b.frames.float() / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, g1, _ = _plain(model, frames, b, cfg, None)
        _, _, g2, _ = _full(model, frames, b, cfg, None, 4)
    assert _rel(g1, g2) <= 2e-2


def test_bad_micro_batch():
    cfg = _cfg()
    model = build_model(cfg, 7, 0, 5)
    b = _batch(T=2)
    with pytest.raises(SurgflowError, match="micro_batch"):
        full_context_step(model, b.frames, b, 0)
