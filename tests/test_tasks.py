"""Task layers: median-frequency weights, losses (masking, weighting), class targets, decoding."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _helpers import documented_names
from surgflow.config import from_dict
from surgflow.io_utils import SurgflowError
from surgflow.labels import CHOLEC80_PHASE_WEIGHTS
from surgflow.models.tasks import (TASKS, AnticipationTask, PhaseTask, ToolsTask, build_task,
                                   median_frequency_weights)


def _batch(B=2, T=6, K=3, I=2, P=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 4:] = False  # padding at the end of lane 1
    return SimpleNamespace(phase=torch.randint(0, P, (B, T), generator=g),
                           tools=torch.randint(0, 2, (B, T, K), generator=g).float(),
                           anticipation=torch.rand(B, T, I, generator=g) * 3, valid=valid)


def test_median_frequency_golden():
    np.testing.assert_allclose(median_frequency_weights([10, 20, 30, 40]), [2.5, 1.25, 5 / 6, 0.625])
    # absent classes get 1.0 and do not enter the median
    np.testing.assert_allclose(median_frequency_weights([0, 10, 30, 0, 20]), [1, 2, 2 / 3, 1, 1])
    # counts inversely proportional to the paper's Cholec80 weights give those weights back
    counts = np.round(1e7 / np.array(CHOLEC80_PHASE_WEIGHTS)).astype(int)
    np.testing.assert_allclose(median_frequency_weights(counts), CHOLEC80_PHASE_WEIGHTS, rtol=1e-4)
    with pytest.raises(SurgflowError):
        median_frequency_weights([0, 0])


def test_phase_weights_from_config_or_counts():
    cfg = from_dict({"task": {"phase_weights": [1.0, 2.0, 3.0, 4.0]}})
    t = build_task("phase", 8, cfg.task, 4, 0, 0, phase_counts=[1, 1, 1, 1])
    assert t.class_weights.tolist() == [1.0, 2.0, 3.0, 4.0]
    t = build_task("phase", 8, from_dict({}).task, 4, 0, 0, phase_counts=[10, 20, 30, 40])
    torch.testing.assert_close(t.class_weights, torch.tensor([2.5, 1.25, 5 / 6, 0.625]))
    with pytest.raises(SurgflowError, match="phase_weights"):
        build_task("phase", 8, from_dict({"task": {"phase_weights": [1.0]}}).task, 4, 0, 0)


def test_phase_loss_is_weighted_ce_over_valid_labelled_frames():
    torch.manual_seed(0)
    w = [0.5, 1.0, 2.0, 4.0]
    task = PhaseTask(8, 4, w)
    b = _batch()
    b.phase[0, 1] = -1  # unlabelled frame
    b.phase[1, 4:] = 3  # labels under padding must not count
    logits = task(torch.randn(2, 6, 8))["phase"]
    loss = task.loss({"phase": logits}, b)["phase"]
    keep = b.valid & (b.phase >= 0)
    ref = F.cross_entropy(logits[keep], b.phase[keep], weight=torch.tensor(w))
    torch.testing.assert_close(loss, ref)
    # nothing labelled: zero, not NaN, and still differentiable
    b.phase[:] = -1
    z = task.loss({"phase": logits}, b)["phase"]
    assert z.item() == 0 and z.requires_grad


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_builds_decodes_and_masks_padding(name):
    """Each registered task: its declared outputs, a differentiable scalar loss under its own name
    that padding (garbage features and labels) does not change, and a decoding of the same [B, T]."""
    cfg = from_dict({"task": {"tasks": [name]}})
    torch.manual_seed(0)
    t = build_task(name, 8, cfg.task, 4, 3, 2)
    assert t.name == name
    h = torch.randn(2, 6, 8)  # [B, T, H]
    out = t(h)
    assert set(out) == set(t.output_keys) and all(v.shape[:2] == (2, 6) for v in out.values())
    b1, b2 = _batch(), _batch()
    h2 = h.clone()
    h2[1, 4:] = 100.0  # garbage features and labels under padding
    b2.phase[1, 4:] = 0
    b2.tools[1, 4:] = 1 - b2.tools[1, 4:]
    b2.anticipation[1, 4:] = 0.0
    l1, l2 = t.loss(out, b1), t.loss(t(h2), b2)
    assert l1[name].dim() == 0 and l1[name].requires_grad and torch.isfinite(l1[name])
    torch.testing.assert_close(l1[name], l2[name])
    dec = t.decode(out)
    assert dec and all(v.shape[:2] == (2, 6) and torch.isfinite(v).all() for v in dec.values())


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_refuses_a_dataset_without_its_labels(name):
    with pytest.raises(SurgflowError, match=f"task '{name}' needs"):
        build_task(name, 8, from_dict({}).task, 0, 0, 0)


def test_the_documented_tasks_are_registered():
    documented = documented_names("TASKS")
    assert len(documented) >= 3 and set(documented) <= set(TASKS.names()), documented


def test_tools_loss_matches_bce():
    task = ToolsTask(8, 3)
    b = _batch()
    b.valid[:] = True
    logits = task(torch.randn(2, 6, 8))["tools"]
    torch.testing.assert_close(task.loss({"tools": logits}, b)["tools"],
                               F.binary_cross_entropy_with_logits(logits, b.tools))


def test_anticipation_targets_and_loss():
    h = 3.0
    minutes = torch.tensor([0.0, 0.5, 2.99, 3.0])
    assert AnticipationTask.class_target(minutes, h).tolist() == [0, 2, 2, 1]
    cfg = from_dict({"task": {"tasks": ["anticipation"], "horizon": h, "anticipation_ce_weight": 0.01}})
    task = build_task("anticipation", 8, cfg.task, 0, 0, 2)
    out = task(torch.randn(1, 4, 8))
    assert out["anticipation"].shape == (1, 4, 2) and out["anticipation_cls"].shape == (1, 4, 2, 3)
    b = SimpleNamespace(anticipation=torch.stack([minutes, minutes.flip(0)], -1)[None],
                        valid=torch.ones(1, 4, dtype=torch.bool))
    parts = task.loss(out, b)
    reg = F.smooth_l1_loss(out["anticipation"], b.anticipation / h, reduction="sum") / 4
    cls = AnticipationTask.class_target(b.anticipation, h)
    ce = F.cross_entropy(out["anticipation_cls"].reshape(-1, 3), cls.reshape(-1), reduction="sum") / 4
    torch.testing.assert_close(parts["anticipation"], reg + 0.01 * ce)


def test_decode_ranges():
    cfg = from_dict({"task": {"tasks": TASKS.names(), "horizon": 5.0}})
    outs = {}
    tasks = [build_task(n, 8, cfg.task, 4, 3, 2) for n in TASKS.names()]
    for t in tasks:
        outs.update(t(torch.randn(2, 6, 8) * 50))
    dec = {}
    for t in tasks:
        dec.update(t.decode(outs))
    torch.testing.assert_close(dec["phase_prob"].sum(-1), torch.ones(2, 6))
    assert dec["tools_prob"].min() >= 0 and dec["tools_prob"].max() <= 1
    a = dec["anticipation_min"]
    assert a.min() >= 0 and a.max() <= 5.0 and ((a == 0) | (a == 5.0)).any()


def test_missing_labels_and_unknown_task():
    cfg = from_dict({})
    with pytest.raises(SurgflowError, match="tools"):
        build_task("tools", 8, cfg.task, 4, 0, 0)
    with pytest.raises(SurgflowError, match="anticipation"):
        build_task("anticipation", 8, cfg.task, 4, 0, 0)
    with pytest.raises(SurgflowError, match="unknown task 'segm'"):
        build_task("segm", 8, cfg.task, 4, 0, 0)
