"""Contract tests driven by the registries: every registered task, strategy, layout and split is
picked up here without being listed, and checked against what it declares (heads: test_heads.py).
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from surgflow.audit.guards import bn_pitfall_warning
from surgflow.config import from_dict, load_config
from surgflow.data.splits import SUBSETS, resolve_split
from surgflow.io_utils import SurgflowError
from surgflow.labels import AUTOLAPARO_PHASES, CHOLEC80_PHASES, CHOLEC80_TOOLS
from surgflow.models.model import build_model
from surgflow.registry import LAYOUTS, SPLITS, STRATEGIES, TASKS

# ---------------------------------------------------------------------------------------- tasks
B, T, D, P, K, I = 2, 6, 8, 4, 3, 2
DIMS = {"num_phases": P, "num_tools": K, "num_instruments": I}


def _labels(seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 4:] = False  # padding at the end of lane 1
    return {"phase": torch.randint(0, P, (B, T), generator=g),  # [B, T]
            "tools": (torch.rand(B, T, K, generator=g) > .5).float(),  # [B, T, K]
            "anticipation": torch.rand(B, T, I, generator=g) * 4, "valid": valid}  # [B, T, I] min


LABEL_KEYS = ("phase", "tools", "anticipation")


def _where(valid, a, b):  # a on valid frames, b on the others; valid [B, T], a/b [B, T, ...]
    return torch.where(valid.view(*valid.shape, *([1] * (a.dim() - 2))), a, b)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name):
    cfg = from_dict({"task": {"tasks": [name]}})
    torch.manual_seed(0)
    task = TASKS.build(name, D, cfg.task, **DIMS)
    assert task.name == name
    h = torch.randn(B, T, D)
    out = task(h)
    assert set(out) == set(task.output_keys)
    assert all(v.shape[:2] == (B, T) for v in out.values())
    labels = _labels()
    loss = task.loss(out, labels)[name]
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert all(p.grad is not None for p in task.parameters())
    # padding is masked: labels on invalid frames do not change the loss, on valid ones they do
    out = {k: v.detach() for k, v in out.items()}
    other = _labels(seed=1)
    on_padding = {k: _where(labels["valid"], labels[k], other[k]) for k in LABEL_KEYS}
    on_valid = {k: _where(labels["valid"], other[k], labels[k]) for k in LABEL_KEYS}
    ref = pytest.approx(float(loss.detach()))
    assert float(task.loss(out, {**labels, **on_padding})[name]) == ref
    assert float(task.loss(out, {**labels, **on_valid})[name]) != ref
    decoded = task.decode(out)
    assert decoded and all(v.shape[:2] == (B, T) and torch.isfinite(v).all() for v in decoded.values())


@pytest.mark.parametrize("name", TASKS.names())
def test_task_needs_its_labels(name):
    """A task whose labels the dataset lacks refuses with a SurgflowError naming the task."""
    cfg = from_dict({"task": {"tasks": [name]}})
    with pytest.raises(SurgflowError, match=name):
        TASKS.build(name, D, cfg.task, num_phases=0, num_tools=0, num_instruments=0)


# ----------------------------------------------------------------------------------- strategies
def _trainer(root, out, name):
    from surgflow.training.trainer import Trainer

    cfg = load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=16",
        "train.seq_len=8", "train.batch_size=2", "train.epochs=2", "train.device=cpu",
        "data.augment=false", "train.micro_batch=4", f"train.strategy={name}",
        "train.two_stage_cnn_epochs=1"])
    return Trainer(cfg, out)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_trains_one_step(tiny_root, tmp_path, name):
    t = _trainer(tiny_root, tmp_path / name, name)
    try:
        assert t.strategy.name == name
        t.strategy.start_epoch(0)
        batch = next(iter(t.strategy.batches(0, 0)))
        # consecutive_frames: the CNN sees T consecutive frames of one video per sequence
        assert (batch.frames.shape[1] == 8) == STRATEGIES.get(name).consecutive_frames
        before = [p.detach().clone() for p in t.params]
        t.optimizer.zero_grad(set_to_none=True)
        r = t.strategy.train_step(batch)
        assert math.isfinite(r.loss) and r.frames > 0
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in t.params)
        t.optimizer.step()
        assert any(not torch.equal(a, p) for a, p in zip(before, t.params))
    finally:
        t.close()


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_bn_guard_follows_the_declared_property(name):
    """The BN pitfall warning fires exactly for the strategies declaring consecutive_frames."""
    cfg = from_dict({"model": {"backbone": "test_resnet", "hidden": 8},
                     "train": {"strategy": name, "seq_len": 8}})
    model = build_model(cfg, 7)
    assert (bn_pitfall_warning(model, cfg) is not None) == STRATEGIES.get(name).consecutive_frames


# -------------------------------------------------------------------------------------- layouts
def _cholec80(raw, root):
    shutil.copytree(raw, root)
    names = sorted(p.stem for p in (raw / "videos").glob("*.mp4"))
    return names, list(CHOLEC80_PHASES), list(CHOLEC80_TOOLS)


def _phase_rows(raw, video):
    return (raw / "phase_annotations" / f"{video}-phase.txt").read_text().strip().split("\n")[1:]


def _autolaparo(raw, root):
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy(raw / "videos" / "video03.mp4", root / "videos" / "03.mp4")
    n = math.ceil(len(_phase_rows(raw, "video03")) / 25)
    ids = (np.arange(n) * 7 // n) + 1  # 1-based ids and frames, one row per second
    (root / "labels" / "label_03.txt").write_text(
        "Frame\tPhase\n" + "".join(f"{j + 1}\t{p}\n" for j, p in enumerate(ids)))
    return ["03"], list(AUTOLAPARO_PHASES), []


def _mstcn(raw, root):
    (root / "videos").mkdir(parents=True)
    (root / "groundTruth").mkdir()
    shutil.copy(raw / "videos" / "video03.mp4", root / "videos" / "clip.mp4")
    rows = [r.split("\t")[1] for r in _phase_rows(raw, "video03")]  # one label per 25-fps frame
    (root / "groundTruth" / "clip.txt").write_text("\n".join(rows) + "\n")
    (root / "mapping.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CHOLEC80_PHASES)))
    return ["clip"], list(CHOLEC80_PHASES), []


TINY_LAYOUTS = {"cholec80": _cholec80, "autolaparo": _autolaparo, "mstcn": _mstcn}


def test_every_layout_has_a_tiny_dataset():
    assert set(TINY_LAYOUTS) == set(LAYOUTS.names()), "add a tiny dataset builder for the new layout"


@pytest.mark.parametrize("name", LAYOUTS.names())
def test_layout_parses_a_tiny_dataset(synthetic_raw, tmp_path, name):
    if name not in TINY_LAYOUTS:
        pytest.fail(f"layout '{name}' has no tiny dataset in TINY_LAYOUTS")
    root = tmp_path / name
    videos, phases, tools = TINY_LAYOUTS[name](synthetic_raw, root)
    raws = LAYOUTS.get(name)(root)
    assert [r.name for r in raws] == videos
    for r in raws:
        assert r.phase_names == phases and r.tool_names == tools
        assert r.video_path.is_file() and all(s.exists() for s in r.sources)
        labels = r.load()
        assert labels.phase.dtype == np.int64 and len(labels.phase) > 0
        assert labels.phase.min() >= -1 and labels.phase.max() < len(phases)
        assert (labels.tools is None) == (not tools)
        if tools:
            assert labels.tools.shape[1] == len(tools)


@pytest.mark.parametrize("name", LAYOUTS.names())
def test_layout_refuses_a_missing_folder(tmp_path, name):
    with pytest.raises(SurgflowError):
        LAYOUTS.get(name)(tmp_path / "missing")


# --------------------------------------------------------------------------------------- splits
CHOLEC_LIKE = [f"video{i:02d}" for i in range(1, 81)]


@pytest.mark.parametrize("name", SPLITS.names())
def test_split_is_a_partition_of_available_videos(name):
    out = resolve_split(name, CHOLEC_LIKE)
    assert set(out) == set(SUBSETS)
    seen = [v for k in SUBSETS for v in out[k]]
    assert len(seen) == len(set(seen)) and set(seen) <= set(CHOLEC_LIKE)
    assert out["train"] and all(out[k] == sorted(out[k]) for k in SUBSETS)
    assert resolve_split(name, reversed(CHOLEC_LIKE)) == out  # order of the listing is irrelevant


@pytest.mark.parametrize("name", SPLITS.names())
def test_split_on_too_few_videos_resolves_or_refuses_clearly(name):
    try:
        out = resolve_split(name, ["video01", "video02", "video03"])
    except SurgflowError as e:
        assert name in str(e)
    else:
        assert set(v for k in SUBSETS for v in out[k]) <= {"video01", "video02", "video03"}
