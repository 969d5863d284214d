"""--resume continues exactly: interrupted + resumed == uninterrupted, bit for bit, on CPU."""
from __future__ import annotations

import csv

import pytest
import torch

from surgflow.config import load_config
from surgflow.io_utils import SurgflowError
from surgflow.training.checkpoint import load_checkpoint
from surgflow.training.trainer import train




def _cfg(root, *extra):
    return load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=32",
        "model.dropout=0.2", "train.seq_len=16", "train.epochs=3", "train.lr=3e-3",
        "train.device=cpu", "train.deterministic=true", "train.seed=3", *extra])


SCHEDULED = ("train.lr_schedule=cosine", "train.warmup_steps=4", "train.lr_min=1e-4",
             "train.wd_exclude_norm_bias=true", "train.agc=0.05")


def _epoch_rows(run) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        return {r["epoch"]: r for r in csv.DictReader(f)}


# EMA of the weights and best.pt by a window of validations: their state resumes too
AVERAGED = ("train.ema_decay=0.9", "train.best_window=2", "model.drop_path_rate=0.1")


@pytest.mark.parametrize("extra", [(), SCHEDULED, AVERAGED], ids=["constant", "cosine_wd_agc", "ema"])
def test_resume_is_bit_identical(tiny_root, tmp_path, extra):
    # straight: 7 optimiser steps (epoch 1 has ~5 steps of T=16, so this crosses an epoch border)
    a = train(_cfg(tiny_root, "train.max_steps=7", *extra), tmp_path / "straight")
    assert a["step"] == 7 and a["stopped"] == "max_steps"
    # interrupted after 3 steps (mid-epoch, LSTM state carried), then resumed to 7
    b1 = train(_cfg(tiny_root, "train.max_steps=3", *extra), tmp_path / "resumed")
    assert b1["step"] == 3 and b1["step_in_epoch"] == 3
    ck = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert ck["strategy"][0]["carry"] is not None  # the carried state is part of the checkpoint
    b2 = train(_cfg(tiny_root, "train.max_steps=7", *extra), tmp_path / "resumed", resume=True)
    assert b2["step"] == 7 and b2["epoch"] == a["epoch"] and b2["step_in_epoch"] == a["step_in_epoch"]

    sa = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    sb = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), f"parameter {k} differs after resume"
    assert ("ema" in sa) == ("train.ema_decay=0.9" in extra)  # (best differs: b1 validated at its stop)
    for k in sa.get("ema", {}):
        assert torch.equal(sa["ema"][k], sb["ema"][k]), f"EMA weight {k} differs after resume"
    for i, (x, y) in enumerate(zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values())):
        for key in x:
            assert torch.equal(x[key], y[key]), f"optimizer state {i}.{key} differs"
    assert torch.equal(sa["rng"][0]["generators"]["augment"], sb["rng"][0]["generators"]["augment"])
    assert sa["scheduler"] == sb["scheduler"]
    assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]  # same lr, same groups
    if extra == SCHEDULED:  # the schedule moved the lr: warmup done, cosine under way
        assert 1e-4 < sa["optimizer"]["param_groups"][0]["lr"] < 3e-3
    # the interrupted epoch's row covers all its steps (before and after the resume): the same
    # train/loss as the uninterrupted run (it logged the post-resume steps only before)
    ra, rb = _epoch_rows(tmp_path / "straight"), _epoch_rows(tmp_path / "resumed")
    assert ra.keys() == rb.keys() and "1" in ra
    for key in ("train/loss", "train/grad_norm", "val/loss", "lr"):
        assert ra["1"][key] == rb["1"][key], key
    # the resumed run kept the metrics rows of the completed epoch and wrote the log
    log = (tmp_path / "resumed" / "log.txt").read_text()
    assert "resumed from" in log


def test_resume_with_other_config_names_keys(tiny_root, tmp_path):
    train(_cfg(tiny_root, "train.max_steps=1"), tmp_path / "run")
    with pytest.raises(SurgflowError, match=r"train\.lr.*model\.hidden|model\.hidden.*train\.lr"):
        train(_cfg(tiny_root, "train.max_steps=2", "train.lr=1e-2", "model.hidden=16"),
              tmp_path / "run", resume=True)
    # starting a new run over an existing one without --resume is refused
    with pytest.raises(SurgflowError, match="--resume"):
        train(_cfg(tiny_root, "train.max_steps=2"), tmp_path / "run")


def test_a_config_key_added_since_the_checkpoint_resumes_at_its_default():
    """A run written before a config key existed resumes when the key keeps its default (the
    behaviour the older code had); another value is still a difference that refuses."""
    from surgflow.config import Config, load_config, to_dict
    from surgflow.training.checkpoint import config_differences

    saved = to_dict(Config())
    del saved["task"]["wmae"]  # a checkpoint of a surgflow that did not know task.wmae
    now = to_dict(Config())
    assert config_differences(saved, now, defaults=to_dict(Config())) == []
    assert config_differences(saved, now) == ["task.wmae: '<absent>' (checkpoint) vs "
                                              "'per_instrument' (now)"]
    other = to_dict(load_config(None, ["task.wmae=pitfalls_bn"]))
    assert config_differences(saved, other, defaults=to_dict(Config())) == [
        "task.wmae: '<absent>' (checkpoint) vs 'pitfalls_bn' (now)"]
