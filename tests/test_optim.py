"""lr schedules (golden values, stepped per optimiser step), weight-decay exclusion, AGC that skips
the output layers, and the gradient norm in the logs."""
from __future__ import annotations

import math

import pytest
import torch

from surgflow.config import ConfigError, load_config
from surgflow.training.runtime import clip_gradients
from surgflow.training.schedules import lr_factor
from surgflow.training.trainer import Trainer


def _t(*overrides):
    return load_config(None, ["train.lr=1e-3", *overrides]).train


def test_warmup_then_cosine_golden():
    t = _t("train.lr_schedule=cosine", "train.warmup_steps=4", "train.lr_min=1e-4")
    total = 104
    assert [lr_factor(s, total, t) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, total, t) == pytest.approx(1.0)  # cosine starts at the base lr
    assert lr_factor(54, total, t) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: mean of 1 and floor
    assert lr_factor(104, total, t) == pytest.approx(0.1)  # floor = lr_min / lr
    assert lr_factor(500, total, t) == pytest.approx(0.1)  # past the end: stays at the floor
    fs = [lr_factor(s, total, t) for s in range(4, 105)]
    assert all(a >= b for a, b in zip(fs, fs[1:]))  # monotone after warmup


def test_step_and_constant_golden():
    t = _t("train.lr_schedule=step", "train.lr_step_every=10", "train.lr_gamma=0.5")
    assert [lr_factor(s, 100, t) for s in (0, 9, 10, 19, 20, 35)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    t = _t("train.warmup_steps=2")
    assert [lr_factor(s, 100, t) for s in (0, 1, 2, 99)] == [0.5, 1, 1, 1]


def test_bad_schedule_names_the_key():
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_config(None, ["train.lr_schedule=linear"])


def _trainer(root, out, *extra) -> Trainer:
    cfg = load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=16",
        "train.seq_len=8", "train.epochs=2", "train.lr=1e-2", "train.device=cpu",
        "data.augment=false", *extra])
    return Trainer(cfg, out)


def test_scheduler_steps_per_optimiser_step(tiny_root, tmp_path):
    t = _trainer(tiny_root, tmp_path / "run", "train.lr_schedule=cosine", "train.warmup_steps=3",
                 "train.max_steps=5")
    total = t.total_steps
    assert total == sum(t.strategy.steps_per_epoch(e) for e in range(2)) and total > 5
    res = t.fit()
    assert res["step"] == 5
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["scheduler"]["last_epoch"] == 5  # one scheduler step per optimiser step
    lr = ck["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-2 * (0.5 * (1 + math.cos(math.pi * 2 / (total - 3)))))
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert "train/grad_norm" in rows[0].split(",")


def test_weight_decay_exclusion(tiny_root, tmp_path):
    t = _trainer(tiny_root, tmp_path / "wd", "train.wd_exclude_norm_bias=true",
                 "train.weight_decay=0.05")
    groups = t.optimizer.param_groups
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05]
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in t.model.named_parameters():
        if p.requires_grad:
            assert (id(p) in no_decay) == (p.ndim <= 1 or name.endswith(".bias")), name
    assert sum(len(g["params"]) for g in groups) == len(t.params)
    t.close()
    t = _trainer(tiny_root, tmp_path / "plain", "train.weight_decay=0.05")
    assert [g["weight_decay"] for g in t.optimizer.param_groups] == [0.05]
    t.close()


def test_agc_skips_output_layers(tiny_root, tmp_path):
    t = _trainer(tiny_root, tmp_path / "agc", "train.agc=0.01")
    for p in t.params:
        p.grad = torch.full_like(p, 100.0)  # far above 0.01 x |w|: AGC clips every clipped tensor
    clip_gradients(t.params, 0.0, 0.01, t.agc_params)
    heads = {id(p) for p in t.model.tasks.parameters()}
    assert heads and len(t.agc_params) == len(t.params) - len(heads)
    for p in t.params:
        untouched = bool(torch.all(p.grad == 100.0))
        assert untouched == (id(p) in heads)
    t.close()


def test_optimizer_choices_are_the_registry_names_and_build_what_they_name():
    from surgflow.config import CHOICES
    from surgflow.registry import OPTIMIZERS, choices
    from surgflow.training.runtime import make_optimizer

    assert "train.optimizer" not in CHOICES  # typed once: the config asks the registry
    assert choices()["train.optimizer"] == tuple(OPTIMIZERS.names()) == ("adamw", "sgd")
    with pytest.raises(ConfigError, match=r"train.optimizer: 'adam' is not one of adamw, sgd"):
        load_config(None, ["train.optimizer=adam"])
    params = list(torch.nn.Linear(3, 2).parameters())
    adamw = make_optimizer(params, _t("train.weight_decay=0.05"))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.05
    assert adamw.defaults["lr"] == 1e-3 and adamw.defaults["fused"]
    sgd = make_optimizer(params, _t("train.optimizer=sgd", "train.momentum=0.8"))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.8
    assert sgd.defaults["nesterov"] is False  # classical momentum (timm's "sgd" is Nesterov)
