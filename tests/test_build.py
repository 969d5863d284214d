"""Training is built in one place (issue 22, item 2): the trainer and the input-path audit get their
dataset, model, sampler, augmentation and strategy from training/build.py's build_training."""
from __future__ import annotations

import inspect

from surgflow.config import load_config
from surgflow.training import build, input_audit
from surgflow.training.input_audit import audit_input_path
from surgflow.training.trainer import Trainer


def _cfg(root, *extra):
    return load_config(None, [
        f"data.root={root}", "data.split=auto", "data.augment=true", "model.backbone=test_resnet",
        "model.norm=gn", "model.hidden=16", "model.tcn_layers=3", "model.tcn_maps=8",
        "train.seq_len=6", "train.batch_size=2", "train.device=cpu", *extra])


def _recording(monkeypatch):
    """build.build_training, recording every call's parts."""
    calls, real = [], build.build_training

    def recorded(*args, **kwargs):
        parts = real(*args, **kwargs)
        calls.append(parts)
        return parts

    monkeypatch.setattr(build, "build_training", recorded)
    return calls


def test_audit_checks_the_parts_build_training_built(tiny_root, monkeypatch):
    calls = _recording(monkeypatch)
    strategy = input_audit.build_training_path(_cfg(tiny_root))
    assert len(calls) == 1 and strategy is calls[0].strategy
    assert strategy.model is calls[0].model and strategy.sampler.dataset is calls[0].train_ds
    assert strategy.ctx.augment is calls[0].augment
    findings = audit_input_path(_cfg(tiny_root), draws=1)
    assert findings and len(calls) == 2  # audit_input_path went through the builder too


def test_trainer_gets_its_parts_from_build_training(tiny_root, tmp_path, monkeypatch):
    calls = _recording(monkeypatch)
    t = Trainer(_cfg(tiny_root, "train.epochs=1"), tmp_path / "run")
    try:
        parts = calls[0]
        assert len(calls) == 1 and t.parts is parts
        assert (t.model, t.strategy, t.train_ds, t.val_ds, t.generator) == (
            parts.model, parts.strategy, parts.train_ds, parts.val_ds, parts.generator)
        assert t.params == parts.params and t.state.strategy is parts.strategy
    finally:
        t.close()


def test_audit_and_trainer_build_the_same_thing(tiny_root, tmp_path, monkeypatch):
    """Same config: the same sampler plan, augmentation type, model structure and initial weights
    apart from pretrained loading (the audit uses random weights)."""
    calls = _recording(monkeypatch)
    cfg = _cfg(tiny_root, "train.epochs=1")
    audit_strategy = input_audit.build_training_path(cfg)
    t = Trainer(_cfg(tiny_root, "train.epochs=1"), tmp_path / "run")
    try:
        a, b = calls
        assert a.strategy.sampler.plan(0) == b.strategy.sampler.plan(0)
        assert type(a.augment) is type(b.augment) and a.instruments == b.instruments
        assert type(audit_strategy) is type(t.strategy)
        assert [n for n, _ in a.model.named_parameters()] == [n for n, _ in b.model.named_parameters()]
    finally:
        t.close()


def test_input_audit_builds_nothing_itself():
    """No second copy of the trainer's construction: the audit has no builder calls of its own
    and reads no private sampler attribute."""
    src = inspect.getsource(input_audit)
    for name in ("build_model(", "build_strategy(", "build_augment(", "PreparedDataset(",
                 "TrainContext(", "check_task_labels(", "._plan("):
        assert name not in src, f"input_audit.py uses {name}: build it with build_training"
