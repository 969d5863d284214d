"""Backbones: norm modes, stage freezing, local weights, unknown names, norm inventory."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from _helpers import documented_names
from surgflow.io_utils import SurgflowError
from surgflow.models.backbones import build_backbone, norm_layers
from surgflow.registry import NORM_MODES

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _x(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 48, generator=g)


def test_features():
    b = build_backbone("test_convnext")
    y = b(_x(3))
    assert y.shape == (3, b.feature_dim) and b.feature_dim == 64


def test_the_documented_norm_modes_are_registered():
    documented = documented_names("NORM_MODES")
    assert len(documented) >= 3 and set(documented) <= set(NORM_MODES.names()), documented


@pytest.mark.parametrize("norm", NORM_MODES.names())
def test_every_norm_mode_builds_and_its_inventory_tells_the_truth(norm):
    """Each registered norm mode builds a BatchNorm backbone whose norm inventory (what the audit
    and the BN guard read) says what the layers do: a frame's training-mode features depend on its
    batch companions exactly when some layer uses batch statistics in training."""
    torch.manual_seed(0)
    b = build_backbone("test_resnet", norm=norm).train()
    x = _x(4)
    together = b(x)  # [4, D]
    assert together.shape == (4, b.feature_dim) and torch.isfinite(together).all()
    inv = norm_layers(b)
    assert inv, f"norm mode {norm}: the inventory lists no norm layer"
    coupled = not torch.allclose(b(x[:1]), together[:1], atol=1e-5, rtol=1e-5)
    assert coupled == any(l.uses_batch_stats_in_train for l in inv)
    assert not any(l.uses_batch_stats_in_eval for l in inv)
    together.sum().backward()  # trainable end to end
    assert any(p.grad is not None for p in b.parameters())


def test_native_bn_uses_batch_statistics():
    b = build_backbone("test_resnet").train()
    x = _x(4)
    alone = b(x[:1])
    together = b(x)[:1]  # same frame, different batch companions -> different output
    assert not torch.allclose(alone, together, atol=1e-5)
    inv = norm_layers(b)
    assert inv and all(l.kind == "BatchNorm2d" and l.uses_batch_stats_in_train
                       and not l.uses_batch_stats_in_eval for l in inv)


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])  # BatchNorm2d, BatchNormAct2d
def test_frozen_bn_train_equals_eval_and_stats_unchanged(name):
    b = build_backbone(name, norm="frozen_bn")
    bns = [m for m in b.modules() if isinstance(m, _BatchNorm)]
    with torch.no_grad():  # non-trivial running statistics
        for m in bns:
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in b.state_dict().items() if "running" in k}
    b.train()  # must not switch BN to batch statistics
    x = _x(4)
    y_train = b(x)
    after = {k: v for k, v in b.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    b.eval()
    torch.testing.assert_close(y_train, b(x))
    # per-frame: a frame's output does not depend on its batch companions
    b.train()
    torch.testing.assert_close(b(x[:1]), y_train[:1], atol=1e-5, rtol=1e-5)
    # affine parameters still train
    assert all(m.weight.requires_grad for m in bns)
    y_train.sum().backward()
    assert all(m.weight.grad is not None for m in bns)
    inv = norm_layers(b)
    assert inv and all(l.kind == "frozen_bn" and not l.uses_batch_stats_in_train for l in inv)


def test_gn_replaces_every_batchnorm_and_copies_affine():
    torch.manual_seed(0)
    native = build_backbone("test_resnet")
    bn_weights = [m.weight.detach().clone() for m in native.modules() if isinstance(m, nn.BatchNorm2d)]
    torch.manual_seed(0)
    b = build_backbone("test_resnet", norm="gn", gn_groups=32)
    assert not any(isinstance(m, _BatchNorm) for m in b.modules())
    gns = [m for m in b.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == len(bn_weights) > 0
    for gn, w in zip(gns, bn_weights):
        assert gn.num_channels % gn.num_groups == 0 and gn.num_groups <= 32
        # largest divisor <= 32
        assert all(gn.num_channels % g for g in range(gn.num_groups + 1, 33))
        torch.testing.assert_close(gn.weight.detach(), w)
    x = _x(3)
    b.train()
    torch.testing.assert_close(b(x[:1]), b(x)[:1], atol=1e-5, rtol=1e-5)  # per-frame
    e = build_backbone("test_efficientnet", norm="gn")  # BatchNormAct2d keeps its activation
    assert not any(isinstance(m, _BatchNorm) for m in e.modules())
    assert e(_x(2)).shape == (2, e.feature_dim)


def test_bn_free_families_inventory():
    conv = norm_layers(build_backbone("test_convnext"))
    assert {l.kind for l in conv} <= {"LayerNorm", "LayerNorm2d"} and conv
    nf = norm_layers(build_backbone("test_nfnet"))
    assert nf and all(l.kind == "weight_std" for l in nf)
    assert not any(l.uses_batch_stats_in_train for l in conv + nf)


FROZEN_PREFIXES = {  # stem + first k stages, by family
    ("test_convnext", 2): ("model.stem.", "model.stages.0.", "model.stages.1."),
    ("test_resnet", 1): ("model.conv1.", "model.bn1.", "model.layer1."),
    ("test_nfnet", 2): ("model.stem.", "model.stages.0.", "model.stages.1."),
}


@pytest.mark.parametrize("name,k", list(FROZEN_PREFIXES))
def test_freeze_stages(name, k):
    b = build_backbone(name, freeze_stages=k)
    prefixes = FROZEN_PREFIXES[(name, k)]
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in b.named_parameters() if n.startswith(prefixes)}
    assert len(frozen) < len(list(b.parameters()))
    b(_x(2)).sum().backward()
    for n, p in b.named_parameters():
        assert (p.grad is None) == (n in frozen), n


def test_freeze_too_many_stages():
    with pytest.raises(SurgflowError, match="freeze_stages.*test_convnext"):
        build_backbone("test_convnext", freeze_stages=9)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file(tmp_path, suffix):
    torch.manual_seed(1)
    src = build_backbone("test_convnext")
    sd = {k: v.clone() for k, v in src.model.state_dict().items()}
    sd["head.fc.weight"] = torch.zeros(10, 64)  # classifier keys of a full checkpoint are tolerated
    sd["head.fc.bias"] = torch.zeros(10)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file
        save_file(sd, str(path))
    torch.manual_seed(2)
    dst = build_backbone("test_convnext", pretrained=str(path))
    x = _x(2)
    torch.testing.assert_close(dst.eval()(x), src.eval()(x))
    random = build_backbone("test_convnext", pretrained=False)
    assert not torch.allclose(random.eval()(x), src(x))


def test_local_weights_missing_keys(tmp_path):
    sd = build_backbone("test_convnext").model.state_dict()
    del sd["stem.0.weight"]
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(SurgflowError, match="missing keys: stem.0.weight"):
        build_backbone("test_convnext", pretrained=str(tmp_path / "w.pth"))
    with pytest.raises(SurgflowError, match="does not exist"):
        build_backbone("test_convnext", pretrained=str(tmp_path / "nope.pth"))


def test_local_weights_then_frozen_bn(tmp_path):
    src = build_backbone("test_resnet")
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, _BatchNorm):
                m.running_var.fill_(2.0)
    torch.save(src.model.state_dict(), tmp_path / "w.pth")
    b = build_backbone("test_resnet", norm="frozen_bn", pretrained=str(tmp_path / "w.pth"))
    assert all(torch.all(m.running_var == 2.0) for m in b.modules() if isinstance(m, _BatchNorm))


def test_unknown_backbone():
    with pytest.raises(SurgflowError, match=r"unknown backbone 'convnext_tinyy'.*timm.list_models"):
        build_backbone("convnext_tinyy")
    with pytest.raises(SurgflowError, match="norm"):
        build_backbone("test_convnext", norm="batch")


def test_pretrained_offline_is_a_clear_error(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):  # what the hub client does without network
        if pretrained:
            raise OSError("We have no connection or you passed local_files_only")
        return real(name, pretrained=pretrained, **kw)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(SurgflowError, match="pretrained.*test_convnext.*local weights file"):
        build_backbone("test_convnext", pretrained=True)


def test_channels_last():
    torch.manual_seed(0)
    a = build_backbone("test_convnext").eval()
    b = build_backbone("test_convnext", channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    assert b.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a(_x(2)), b(_x(2)), atol=1e-5, rtol=1e-4)
