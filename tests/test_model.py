"""SurgflowModel contract: shapes, state, causality, refusal of non-causal heads online, loss, decode."""
from __future__ import annotations

import pytest
import torch

from surgflow.config import from_dict
from surgflow.io_utils import SurgflowError
from surgflow.models import SurgflowModel, build_model

try:  # the real Batch when the data layer is there
    from surgflow.data.samplers import Batch
except ImportError:  # pragma: no cover
    Batch = None


def _cfg(**model):
    tasks = model.pop("tasks", ["phase", "tools", "anticipation"])
    online = model.pop("online", True)
    base = {"backbone": "test_convnext", "hidden": 16, "tcn_layers": 3, "tcn_maps": 8}
    base.update(model)
    return from_dict({"model": base, "task": {"tasks": tasks, "online": online, "horizon": 3.0}})


def _batch(B=2, T=5, P=7, K=7, I=5, H=32, W=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    fields = dict(frames=torch.randint(0, 256, (B, T, 3, H, W), dtype=torch.uint8, generator=g),
                  phase=torch.randint(0, P, (B, T), generator=g),
                  tools=torch.randint(0, 2, (B, T, K), generator=g).float(),
                  anticipation=torch.rand(B, T, I, generator=g) * 3,
                  valid=torch.ones(B, T, dtype=torch.bool), new_video=torch.ones(B, dtype=torch.bool),
                  videos=["a"] * B, starts=torch.zeros(B, dtype=torch.long))
    if Batch is not None:
        return Batch(**fields)
    from types import SimpleNamespace
    return SimpleNamespace(**fields)


def _frames(b):
    return b.frames.float() / 255


@pytest.mark.parametrize("tasks", [["phase"], ["tools"], ["anticipation"], ["phase", "tools", "anticipation"]])
def test_outputs_loss_decode(tasks):
    torch.manual_seed(0)
    model = build_model(_cfg(tasks=tasks), num_phases=7, num_tools=7, num_instruments=5)
    assert isinstance(model, SurgflowModel) and model.is_causal
    b = _batch()
    outputs, state = model(_frames(b), None, b.new_video)
    shapes = {"phase": (2, 5, 7), "tools": (2, 5, 7), "anticipation": (2, 5, 5),
              "anticipation_cls": (2, 5, 5, 3)}
    expected = {k for t in tasks for k in shapes if k.startswith(t)}
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {k: shapes[k] for k in expected}
    assert isinstance(state, tuple)
    total, logs = model.loss(outputs, b)
    torch.testing.assert_close(total.detach(), sum(logs[t] for t in tasks))
    total.backward()
    assert model.head.rnn.weight_hh_l0.grad is not None
    dec = model.decode(outputs)
    names = {"phase": "phase_prob", "tools": "tools_prob", "anticipation": "anticipation_min"}
    assert set(dec) == {names[t] for t in tasks}
    if "anticipation" in tasks:
        assert dec["anticipation_min"].min() >= 0 and dec["anticipation_min"].max() <= 3.0


def test_features_temporal_forward_agree_and_preprocess():
    torch.manual_seed(0)
    model = build_model(_cfg(), 7, 7, 5, size=(32, 48)).eval()
    b = _batch()
    f = model.features(_frames(b))
    assert f.shape == (2, 5, model.backbone.feature_dim)
    torch.testing.assert_close(model.features(b.frames), f)  # uint8 is accepted too
    out1, _ = model.temporal(f, None, b.new_video)
    out2, _ = model(_frames(b))
    torch.testing.assert_close(out1["phase"], out2["phase"])
    pre = model.preprocess
    assert set(pre) == {"mean", "std", "size"} and len(pre["mean"]) == 3 and pre["size"] == [32, 48]
    # normalisation uses the model's own mean/std
    x = torch.full((1, 1, 3, 32, 48), 0.5)
    manual = model.backbone((x[0] - torch.tensor(pre["mean"]).view(1, 3, 1, 1))
                            / torch.tensor(pre["std"]).view(1, 3, 1, 1))
    torch.testing.assert_close(model.features(x)[0], manual)


def test_state_carried_chunks_equal_whole_video():
    torch.manual_seed(0)
    for head in ("lstm", "tcn"):
        model = build_model(_cfg(head=head), 7, 7, 5).eval()
        b = _batch(B=1, T=9)
        with torch.no_grad():
            whole, _ = model(_frames(b), model.init_state(b), b.new_video)
            state, parts = model.init_state(1), []
            for i, (s, e) in enumerate([(0, 4), (4, 9)]):
                o, state = model(_frames(b)[:, s:e], state, torch.tensor([i == 0]))
                state = model.detach_state(state)
                parts.append(o["phase"])
        assert (torch.cat(parts, 1) - whole["phase"]).abs().max() < 1e-5


@pytest.mark.parametrize("head", ["bilstm", "tcn_centered"])
def test_non_causal_head_refused_online(head):
    with pytest.raises(SurgflowError, match=f"head '{head}' is not causal; set task.online: false"):
        build_model(_cfg(head=head), 7, 7, 5)
    model = build_model(_cfg(head=head, online=False), 7, 7, 5)
    assert not model.is_causal
    out, state = model(_frames(_batch()))
    assert out["phase"].shape == (2, 5, 7) and state == ()


def test_unknown_head_and_missing_labels():
    with pytest.raises(SurgflowError, match="unknown head 'transformer'"):
        build_model(_cfg(head="transformer"), 7, 7, 5)
    with pytest.raises(SurgflowError, match="tools"):
        build_model(_cfg(tasks=["tools"]), 7, 0, 5)


def test_padding_masked_in_model_loss():
    torch.manual_seed(0)
    model = build_model(_cfg(), 7, 7, 5).eval()
    b = _batch()
    b.valid[1, 3:] = False
    out, _ = model(_frames(b))
    l1, _ = model.loss(out, b)
    b.phase[1, 3:] = (b.phase[1, 3:] + 1) % 7
    b.tools[1, 3:] = 1 - b.tools[1, 3:]
    b.anticipation[1, 3:] = 0
    l2, _ = model.loss(out, b)
    torch.testing.assert_close(l1, l2)


def test_phase_weights_survive_a_state_dict_round_trip():
    cfg = _cfg(tasks=["phase"])
    a = build_model(cfg, 4, 0, 0, phase_counts=[10, 20, 30, 40])
    b = build_model(cfg, 4, 0, 0)  # rebuilt from a checkpoint: no counts at hand
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.tasks["phase"].class_weights, torch.tensor([2.5, 1.25, 5 / 6, 0.625]))


def test_causal_model_with_frozen_bn_backbone():
    """In train mode, frozen_bn keeps frames independent: past outputs ignore future frames."""
    torch.manual_seed(0)
    model = build_model(_cfg(backbone="test_resnet", norm="frozen_bn"), 7, 7, 5).train()
    b = _batch(B=1, T=6)
    x = _frames(b)
    x2 = x.clone()
    x2[:, 4:] = torch.rand_like(x2[:, 4:])
    with torch.no_grad():
        y, _ = model(x)
        y2, _ = model(x2)
    torch.testing.assert_close(y["phase"][:, :4], y2["phase"][:, :4])
    native = build_model(_cfg(backbone="test_resnet"), 7, 7, 5).train()  # BN couples frames
    with torch.no_grad():
        y, _ = native(x)
        y2, _ = native(x2)
    assert not torch.allclose(y["phase"][:, :4], y2["phase"][:, :4])


def test_channels_last_from_config():
    cfg = _cfg()
    cfg.train.channels_last = True
    torch.manual_seed(0)
    m = build_model(cfg, 7, 7, 5).eval()
    assert m.backbone.channels_last
    cfg.train.channels_last = False
    torch.manual_seed(0)
    ref = build_model(cfg, 7, 7, 5).eval()
    x = _frames(_batch())
    torch.testing.assert_close(m(x)[0]["phase"], ref(x)[0]["phase"], atol=1e-5, rtol=1e-4)


def test_rebuild_without_pretrained_weights(tmp_path):
    cfg = _cfg(pretrained=str(tmp_path / "gone.pth"))  # the run's weights file is gone
    with pytest.raises(SurgflowError, match="does not exist"):
        build_model(cfg, 7, 7, 5)
    model = build_model(cfg, 7, 7, 5, load_pretrained=False)  # a checkpoint provides the weights
    assert model.backbone.feature_dim == 64
