"""Backbones: any timm model by name -> one feature vector per frame, with an explicit norm mode.

Norm modes (docs/DOMAIN.md section 2: BatchNorm in train mode couples the frames of a batch):
  native     the model as timm builds it (BatchNorm uses batch statistics in train mode)
  frozen_bn  every BatchNorm always normalises with its running statistics (even after
             model.train()); its affine weight and bias still train
  gn         every BatchNorm replaced by GroupNorm (largest divisor of C <= gn_groups), affine copied
BN-free families need no mode: `convnext_*` (LayerNorm), `resnet50_gn`, `nf_resnet50`, `nfnet_l0`.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple, Union

import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.nn.modules.batchnorm import _BatchNorm

from surgflow.checkpoint_io import weights_only_load  # every .pt read goes there
from surgflow.io_utils import SurgflowError
from surgflow.models.offline_weights import WHEEL_PREFIX, resolve_wheel_weights
from surgflow.registry import NORM_MODES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# NORM_MODES: norm mode name -> function(model: nn.Module, gn_groups: int, name: str) -> nn.Module
# (converted in place)


# --------------------------------------------------------------------------------------------
# frozen_bn: BatchNorm subclasses that stay in eval mode whatever train() is asked.


class FrozenStatsMixin:
    """Mixed into a BatchNorm class: train(True) is ignored, so running statistics are always used
    (and never updated). Parameters keep requires_grad, so the affine transform still trains."""

    def train(self, mode: bool = True):
        return super().train(False)


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    if issubclass(cls, FrozenStatsMixin):
        return cls
    if cls not in _FROZEN_CLASSES:
        name = f"FrozenStats{cls.__name__}"
        new = type(name, (FrozenStatsMixin, cls), {"__module__": __name__})
        new.__qualname__ = name
        globals()[name] = new  # importable by name, so pickling a whole model still works
        _FROZEN_CLASSES[cls] = new
    return _FROZEN_CLASSES[cls]


@NORM_MODES.register("native")
def _native(model: nn.Module, gn_groups: int, name: str = "") -> nn.Module:
    return model


@NORM_MODES.register("frozen_bn")
def freeze_batchnorm(model: nn.Module, gn_groups: int = 32, name: str = "") -> nn.Module:
    """Swap the class of every BatchNorm (incl. SyncBatchNorm and timm's BatchNormAct2d) for a
    frozen-statistics subclass; the state_dict keys do not change, so pretrained weights still load."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            if m.running_mean is None:
                raise SurgflowError(f"frozen_bn: {type(m).__name__} has no running statistics "
                                    "(track_running_stats=False); use model.norm: gn")
            m.__class__ = _frozen_class(type(m))
            m.train(False)
    return model


# --------------------------------------------------------------------------------------------
# gn: BatchNorm -> GroupNorm.


def _largest_divisor(channels: int, at_most: int) -> int:
    return max(g for g in range(1, min(channels, at_most) + 1) if channels % g == 0)


def _group_norm_like(bn: _BatchNorm, gn_groups: int) -> nn.Module:
    from timm.layers import BatchNormAct2d, GroupNormAct  # heavy: timm (+ torchvision, ~2 s)

    c = bn.num_features
    groups = _largest_divisor(c, gn_groups)
    if isinstance(bn, BatchNormAct2d):  # timm fuses the activation into the norm layer: keep it
        gn = GroupNormAct(c, groups, eps=bn.eps, affine=bn.affine, apply_act=False)
        gn.act, gn.drop = bn.act, bn.drop
    else:
        gn = nn.GroupNorm(groups, c, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        with torch.no_grad():
            gn.weight.copy_(bn.weight)
            gn.bias.copy_(bn.bias)
    return gn.to(device=bn.weight.device if bn.affine else None)


class PretrainedBatchNormWarning(UserWarning):
    """norm: gn met BatchNorm layers holding trained statistics (the pretrained features are lost)."""


def has_trained_bn_statistics(model: nn.Module) -> bool:
    """True when some BatchNorm holds statistics other than the fresh ones (mean 0, var 1): the
    weights come from training (a pretrained file or the hub), not from a random initialisation."""
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is not None:
            if bool(m.running_mean.any()) or not bool((m.running_var == 1).all()):
                return True
    return False


@NORM_MODES.register("gn")
def batchnorm_to_groupnorm(model: nn.Module, gn_groups: int = 32, name: str = "") -> nn.Module:
    if has_trained_bn_statistics(model):
        warnings.warn(
            f"model.norm: gn on backbone '{name or type(model).__name__}' with pretrained BatchNorm "
            "weights: GroupNorm has no use for the BatchNorm running statistics, so only the affine "
            "parameters are copied and the pretrained features are largely lost. Use natively "
            "trained GroupNorm weights (model.backbone: resnet50_gn) or keep the pretrained "
            "statistics with model.norm: frozen_bn", PretrainedBatchNormWarning, stacklevel=3)
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, _BatchNorm):
                setattr(m, child_name, _group_norm_like(child, gn_groups))
    return model


# --------------------------------------------------------------------------------------------
# THE inventory of normalisation layers (the audit, its guards and full_context's safety check).


class NormLayer(NamedTuple):
    name: str
    kind: str
    uses_batch_stats_in_train: bool
    uses_batch_stats_in_eval: bool


def norm_layers(module: nn.Module) -> list[NormLayer]:
    """Every normalisation layer of `module`: (name, kind, batch statistics in train?, in eval?).
    'Batch statistics' means statistics pooled over the samples of a batch (frames of a clip)."""
    from timm.layers import LayerNorm2d, StdConv2d, ScaledStdConv2d  # heavy: timm (+ torchvision, ~2 s)

    frozen_types: tuple = ()
    try:
        from timm.layers import FrozenBatchNorm2d as TimmFrozen  # heavy: timm
        frozen_types += (TimmFrozen,)
    except ImportError:  # pragma: no cover
        pass
    try:
        from torchvision.ops import FrozenBatchNorm2d as TvFrozen  # heavy: torchvision
        frozen_types += (TvFrozen,)
    except ImportError:  # pragma: no cover
        pass

    out = []
    for name, m in module.named_modules():
        if isinstance(m, FrozenStatsMixin):
            out.append(NormLayer(name, "frozen_bn", False, False))
        elif isinstance(m, _BatchNorm):
            kind = "SyncBatchNorm" if isinstance(m, nn.SyncBatchNorm) else type(m).__name__
            no_running = m.running_mean is None or not m.track_running_stats
            out.append(NormLayer(name, kind, True, bool(no_running)))
        elif isinstance(m, frozen_types):
            out.append(NormLayer(name, "frozen_bn", False, False))
        elif isinstance(m, nn.GroupNorm):
            out.append(NormLayer(name, type(m).__name__, False, False))
        elif isinstance(m, LayerNorm2d):
            out.append(NormLayer(name, "LayerNorm2d", False, False))
        elif isinstance(m, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))):
            out.append(NormLayer(name, type(m).__name__, False, False))
        elif isinstance(m, (nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)):
            out.append(NormLayer(name, type(m).__name__, False, False))  # per sample
        elif isinstance(m, (StdConv2d, ScaledStdConv2d)):  # NF nets: weight standardisation
            out.append(NormLayer(name, "weight_std", False, False))
    return out


def batch_stat_layers(module: nn.Module) -> list[str]:
    """Names of the layers that, in the module's current mode, pool statistics over the batch."""
    return [n.name for n in norm_layers(module)
            if (n.uses_batch_stats_in_train if _mode_of(module, n.name) else n.uses_batch_stats_in_eval)]


def _mode_of(module: nn.Module, name: str) -> bool:
    return module.get_submodule(name).training if name else module.training


# --------------------------------------------------------------------------------------------
# Stages (for freeze_stages).


def stem_and_stages(model: nn.Module, name: str = "") -> tuple[list[nn.Module], list[nn.Module]]:
    """(stem modules, ordered stage modules) as the model's coarse `group_matcher` names them (the
    grouping timm's layer-wise lr decay uses): the children its 'stem' pattern matches, and the
    modules its numbered 'blocks' patterns match whole (stages.1, layer2, blocks.3, s2), by number;
    blocks patterns with a fixed number (final norm, head conv) are no stage."""
    try:
        groups = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        raise SurgflowError(f"model.freeze_stages: backbone '{name}' ({type(model).__name__}) does "
                            "not name its stages (no timm group_matcher); use freeze_stages: 0"
                            ) from None
    blocks = groups["blocks"]
    blocks = blocks if isinstance(blocks, (list, tuple)) else [(blocks, None)]
    numbered = [re.compile(p) for p, fixed in blocks if fixed is None]
    stem_re = re.compile(groups["stem"])
    stem = [m for n, m in model.named_children() if stem_re.match(n)]
    stages: dict[int, nn.Module] = {}
    for n, m in model.named_modules():
        hit = next((h for h in (p.match(n) for p in numbered) if h and h.group(0) == n), None)
        if hit and stages.setdefault(int(hit.group(1)), m) is not m:  # densenet: block + transition
            raise SurgflowError(f"model.freeze_stages: backbone '{name}' has two modules numbered "
                                f"{hit.group(1)} in its group_matcher; use freeze_stages: 0")
    return stem, [stages[i] for i in sorted(stages)]


def _stem_params(model: nn.Module) -> list[nn.Parameter]:
    # token / position embeddings of transformers belong with the stem
    stem_re = re.compile(model.group_matcher(coarse=True)["stem"])
    return [p for n, p in model.named_parameters(recurse=False) if stem_re.match(n)]


def freeze_first_stages(model: nn.Module, k: int, name: str = "") -> int:
    """Freeze the stem and the first k stages, BatchNorm statistics included (their BatchNorms
    become frozen-statistics layers, which stay in eval mode through model.train(): a frozen stage
    in train mode would still normalise with, and update, statistics pooled over the batch's
    frames). Returns the number of frozen parameters."""
    if k <= 0:
        return 0
    stem, stages = stem_and_stages(model, name)
    if k > len(stages):
        raise SurgflowError(f"model.freeze_stages: {k} is more than the {len(stages)} stages of "
                            f"backbone '{name}'")
    params = _stem_params(model) + [p for m in stem + stages[:k] for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    for m in stem + stages[:k]:
        freeze_batchnorm(m)
    return sum(p.numel() for p in params)


# --------------------------------------------------------------------------------------------
# Weights.


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise SurgflowError(f"model.pretrained: weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = weights_only_load(path)
    except Exception as e:  # corrupt file, pickle with code, ...
        raise SurgflowError(f"model.pretrained: cannot read weights file {path}: {e}") from e
    for key in ("state_dict", "model", "state_dict_ema"):  # common checkpoint wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SurgflowError(f"model.pretrained: {path} does not hold a state_dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_weights(model: nn.Module, path: Union[str, Path], name: str = "") -> None:
    """Load a local state_dict (.pth/.pt/.bin/.safetensors); classifier keys are ignored."""
    path = Path(path)
    sd = _read_state_dict(path)
    own = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
    classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    unexpected = [k for k in sd if k not in own and not any(k.startswith(c + ".") for c in classifiers)]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        msg = f"model.pretrained: weights file {path} does not match backbone '{name}'"
        if missing:
            msg += f"; {len(missing)} missing keys: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else "")
        if unexpected:
            msg += f"; {len(unexpected)} unexpected keys: {', '.join(unexpected[:10])}" + (" ..." if len(unexpected) > 10 else "")
        raise SurgflowError(msg)
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
           if k in sd and sd[k].shape != own[k].shape]
    if bad:
        raise SurgflowError(f"model.pretrained: shape mismatch in {path}: {'; '.join(bad[:5])}")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


# --------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A timm model without classifier: images [N, 3, H, W] (normalised) -> features [N, D]."""

    def __init__(self, model: nn.Module, name: str, norm: str, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.name = name
        self.norm = norm
        self.feature_dim = int(model.num_features)
        self.channels_last = False
        if channels_last:
            self.to_channels_last()

    def to_channels_last(self) -> "Backbone":
        self.channels_last = True
        self.model.to(memory_format=torch.channels_last)
        return self

    @property
    def mean(self) -> tuple:
        return tuple(getattr(self.model, "pretrained_cfg", {}).get("mean", IMAGENET_MEAN))

    @property
    def std(self) -> tuple:
        return tuple(getattr(self.model, "pretrained_cfg", {}).get("std", IMAGENET_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)  # [N, D] (timm pools when num_classes=0)


def build_backbone(name: str, norm: str = "native", pretrained: Union[bool, str, os.PathLike] = False,
                   freeze_stages: int = 0, gn_groups: int = 32, channels_last: bool = False,
                   drop_path_rate: float = 0.0) -> Backbone:
    import timm  # heavy: timm (+ torchvision, ~2 s): models/ imports without it

    convert = NORM_MODES.get(norm)  # before the (slow) build: an unknown mode fails at once
    if not timm.is_model(name):
        raise SurgflowError(f"model.backbone: unknown backbone '{name}'; list the names timm knows "
                            f"with timm.list_models('{name.split('_')[0]}*')")
    from_hub = pretrained is True
    # stochastic depth only when asked: not every timm model takes the argument
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    try:
        model = timm.create_model(name, pretrained=from_hub, num_classes=0, **extra)
    except TypeError as e:
        if extra and "drop_path_rate" in str(e):
            raise SurgflowError(f"model.drop_path_rate: timm's '{name}' has no stochastic depth "
                                f"({e}); set model.drop_path_rate=0") from None
        raise
    except Exception as e:
        if from_hub:
            raise SurgflowError(
                f"model.pretrained: could not download ImageNet weights of '{name}' from the timm hub "
                f"({type(e).__name__}: {e}). Connect to the network (unset HF_HUB_OFFLINE), or set "
                "model.pretrained to a local weights file, or to false") from e
        raise
    if isinstance(pretrained, str) and pretrained.startswith(WHEEL_PREFIX):  # offline ImageNet weights
        pretrained = resolve_wheel_weights(pretrained, name)
    if isinstance(pretrained, (str, os.PathLike)) and not isinstance(pretrained, bool):
        if str(pretrained).lower() in ("true", "false", ""):
            raise SurgflowError(f"model.pretrained: '{pretrained}' is a string; write true or false "
                                "without quotes, or a weights file path")
        load_weights(model, pretrained, name)
    convert(model, gn_groups, name)
    freeze_first_stages(model, freeze_stages, name)
    return Backbone(model, name, norm, channels_last)
