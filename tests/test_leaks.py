"""Leaks of the future through the training input path (issue 9.1): each test perturbs what comes
after frame t (later frames, a lane's padding) and checks that nothing at frames <= t changes, in
train mode with the same random draws."""
from __future__ import annotations

import pytest
import torch

from surgflow.data.augment import ClipAugment


def _clips(B=4, T=16, H=24, W=40, seed=0):
    return torch.rand(B, T, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t", [0, 7, 14])
def test_augmentation_does_not_pool_over_time(t):
    """Default ClipAugment, p_color=1 so contrast is always on: changing frames t+1.. (content and
    statistics) must leave frames 0..t bit-identical (before the fix: up to 0.043 at t=7)."""
    B, T = 8, 16
    x = _clips(B, T)
    y = x.clone()
    y[:, t + 1:] = 0.5 + 0.5 * torch.rand_like(y[:, t + 1:])  # brighter future
    aug = ClipAugment(p_color=1.0)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(y, generator=torch.Generator().manual_seed(3))  # same draws
    change = float((a[:, :t + 1] - b[:, :t + 1]).abs().max())
    assert change == 0.0, f"frames <= {t} changed by {change:.4f} when only later frames changed"


def test_padding_does_not_enter_valid_frames():
    """A lane's last chunk is padded with black frames: valid frames must not see them."""
    x = _clips(4, 16)
    padded = x.clone()
    padded[:, 10:] = 0  # padding (valid=False)
    aug = ClipAugment(p_color=1.0)
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(padded, generator=torch.Generator().manual_seed(5))
    change = float((a[:, :10] - b[:, :10]).abs().max())
    assert change == 0.0, f"valid frames changed by {change:.4f} with padding"


def test_the_kept_leaky_augmentation_still_leaks():
    """tests/_helpers.ClipMeanContrast reproduces the old contrast (the audit must flag it)."""
    from _helpers import ClipMeanContrast

    x = _clips(8, 16)
    y = x.clone()
    y[:, 8:] = 0.5 + 0.5 * torch.rand_like(y[:, 8:])
    aug = ClipMeanContrast(p_color=1.0)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(y, generator=torch.Generator().manual_seed(3))
    assert float((a[:, :8] - b[:, :8]).abs().max()) > 0.01


# ------------------------------------------------------------------ offline heads and padding
def _model(head, **model):
    from surgflow.config import from_dict
    from surgflow.models.model import build_model

    torch.manual_seed(0)
    cfg = from_dict({"model": {"backbone": "test_resnet", "norm": "gn", "head": head, "hidden": 16,
                               "tcn_layers": 3, "tcn_maps": 8, **model},
                     "task": {"tasks": ["phase", "anticipation"], "online": False}})
    return build_model(cfg, 7, 0, 5).train()


@pytest.mark.parametrize("head", ["bilstm", "tcn_centered"])
def test_offline_heads_do_not_see_padding(head):
    """Lane 1 has 6 valid frames of 10: its valid logits must equal those of the 6 frames alone,
    whatever the padding holds (before the fix they changed by 0.16 in the issue's measurement)."""
    model = _model(head)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 10, 3, 32, 32, generator=g)
    x[1, 6:] = 0  # the sampler's padding
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 6:] = False
    nv = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        out, _ = model(x, None, nv, valid)
        alone, _ = model(x[1:, :6], None, nv[1:])
        noisy = x.clone()
        noisy[1, 6:] = torch.rand(4, 3, 32, 32, generator=g)
        out2, _ = model(noisy, None, nv, valid)
    for k in out:
        change = float((out[k][1, :6] - alone[k][0]).abs().max())
        assert change < 1e-5, f"{k}: valid logits differ by {change:.3g} with vs without padding"
        assert float((out[k][1, :6] - out2[k][1, :6]).abs().max()) < 1e-5
        torch.testing.assert_close(out[k][0], out2[k][0])  # the full lane is untouched


@pytest.mark.parametrize("head,online", [("bilstm", False), ("tcn_centered", False), ("lstm", True)])
def test_training_step_ignores_padding_content(tiny_root, tmp_path, head, online):
    """Through the real training path (carry_hidden strategy, augmentation on, train mode, same
    random draws): the loss of a batch does not depend on what its padding frames hold."""
    from surgflow.config import load_config
    from surgflow.training.trainer import Trainer

    cfg = load_config(None, [
        f"data.root={tiny_root}", "data.split=auto", "model.backbone=test_resnet", "model.norm=gn",
        f"model.head={head}", f"task.online={str(online).lower()}", "model.hidden=16",
        "model.tcn_layers=3", "model.tcn_maps=8", "train.seq_len=8", "train.batch_size=2",
        "train.device=cpu", "data.augment=true"])
    t = Trainer(cfg, tmp_path / "run")
    try:
        t.strategy.start_epoch(0)
        batch = next(iter(t.strategy.batches(0, 0)))
        batch.valid[1, 5:] = False  # lane 1 ends its video after 5 frames
        batch.phase[1, 5:] = -1
        batch.frames[1, 5:] = 0
        noisy = torch.randint(0, 256, batch.frames[1, 5:].shape, dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(1))
        losses = []
        for pad in (None, noisy):
            if pad is not None:
                batch.frames[1, 5:] = pad
            t.strategy.state = None
            t.generator.manual_seed(7)  # same augmentation draws
            t.optimizer.zero_grad(set_to_none=True)
            losses.append(t.strategy.train_step(batch).loss)
        assert abs(losses[0] - losses[1]) < 1e-6 * max(1.0, abs(losses[0])), losses
    finally:
        t.close()


# ------------------------------------------------------------------ bf16
@pytest.mark.parametrize("head", ["lstm", "tcn"])
def test_bf16_carried_state_stays_fp32(head):
    """Under bf16 autocast the carried state is fp32 (no rounding at chunk boundaries), and two
    chunks with the state carried equal one pass over both."""
    model = _model(head, **{}).eval()
    x = torch.rand(1, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    nv = torch.ones(1, dtype=torch.bool)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        whole, _ = model(x, None, nv)
        a, s = model(x[:, :5], None, nv)
        assert s and all(v.dtype == torch.float32 for v in s), [v.dtype for v in s]
        b, s2 = model(x[:, 5:], s, ~nv)
        assert all(v.dtype == torch.float32 for v in s2)
    for k in whole:
        torch.testing.assert_close(torch.cat([a[k], b[k]], 1).float(), whole[k].float(),
                                   atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ frozen stages
def test_frozen_stages_are_frozen_statistics_included():
    """norm: native + freeze_stages: 2 -> in train mode (also after model.train()), the output of the
    frozen stages for frames 0..3 must not change when frames 4..7 change, and their BatchNorm
    running statistics must not move (before the fix: both did)."""
    from surgflow.models.backbones import build_backbone, stem_and_stages

    torch.manual_seed(0)
    bb = build_backbone("test_resnet", norm="native", freeze_stages=2)
    bb.train()  # the trainer calls model.train(): frozen stages must stay frozen
    _, stages = stem_and_stages(bb.model)
    seen = []
    hook = stages[1].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    frozen_bn = [m for m in [*stages[0].modules(), *stages[1].modules()]
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [m.running_mean.clone() for m in frozen_bn]
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[4:] = 0.5 + 0.5 * torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    bb(x), bb(y)
    hook.remove()
    change = float((seen[0][:4] - seen[1][:4]).abs().max())
    assert change == 0.0, f"frozen-stage output of frames 0..3 changed by {change:.3g}"
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, frozen_bn))
    # the trainable stages still train with batch statistics (native), the frozen ones do not
    later = [m for m in stages[2].modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert later and all(m.training for m in later)
    assert not any(p.requires_grad for s in stages[:2] for p in s.parameters())


# ------------------------------------------------------------------ gn on pretrained BatchNorm
def test_gn_on_pretrained_batchnorm_warns(tmp_path):
    """norm: gn on a BN-pretrained weights file (made here: trained-looking statistics) warns and
    names the alternatives; random weights do not warn."""
    import warnings

    from surgflow.models.backbones import PretrainedBatchNormWarning, build_backbone

    torch.manual_seed(0)
    src = build_backbone("test_resnet").model
    for m in src.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "bn_pretrained.pth"
    torch.save(src.state_dict(), path)
    with pytest.warns(PretrainedBatchNormWarning, match=r"resnet50_gn.*frozen_bn"):
        build_backbone("test_resnet", norm="gn", pretrained=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedBatchNormWarning)
        build_backbone("test_resnet", norm="gn")  # random init: nothing pretrained to lose
        build_backbone("test_resnet", norm="frozen_bn", pretrained=str(path))  # the advised mode
