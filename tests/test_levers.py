"""Training levers of issue 20: EMA of the weights, best.pt by a window of validations,
stochastic depth; each does what its config key says, and the bad values name the key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from surgflow.checkpoint_io import load_checkpoint
from surgflow.config import ConfigError, load_config
from surgflow.evaluation.runner import evaluate_run
from surgflow.models.backbones import build_backbone
from surgflow.io_utils import SurgflowError
from surgflow.runs import load_model, resolve_checkpoint_path
from surgflow.training.state import TrainState
from surgflow.training.trainer import train


def _cfg(root, *extra):
    return load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=16",
        "train.seq_len=16", "train.epochs=2", "train.lr=3e-3", "train.device=cpu", "train.seed=1",
        *extra])


def test_ema_weights_are_validated_saved_and_loaded(tiny_root, tmp_path):
    res = train(_cfg(tiny_root, "train.ema_decay=0.9"), tmp_path / "run")
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert ck["ema"].keys() == ck["model"].keys()
    moved = [k for k in ck["model"] if ck["model"][k].is_floating_point()
             and not torch.equal(ck["model"][k], ck["ema"][k])]
    assert moved, "the average equals the trained weights: the EMA was not kept apart"
    info: dict = {}
    model, cfg, _ = load_model(tmp_path / "run", "best", info=info)
    assert info["weights"] == "ema" and cfg.train.ema_decay == 0.9
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck["ema"][k]), k  # eval and predict run the averaged weights
    # the validation row of the best epoch is the EMA's: re-validating the EMA weights gives it
    assert res["best_metric"]["value"] is not None
    # without EMA the checkpoint has no average and eval loads the trained weights
    train(_cfg(tiny_root, "train.max_steps=2"), tmp_path / "plain")
    assert "ema" not in load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")
    info = {}
    load_model(tmp_path / "plain", "last", info=info)
    assert info["weights"] == "model"



def test_ema_without_warmup_averages_at_its_decay_from_the_first_step(tiny_root, tmp_path):
    # timm copies the weights at the first step; at the second the average is d*w1 + (1-d)*w2,
    # so (ema - w2) scales with d: 0.9 without warmup, 1 - 2**(-2/3) = 0.37 with it
    ck = {}
    for warmup in ("true", "false"):
        train(_cfg(tiny_root, "train.ema_decay=0.9", f"train.ema_warmup={warmup}",
                   "train.max_steps=2"), tmp_path / warmup)
        ck[warmup] = load_checkpoint(tmp_path / warmup / "checkpoints" / "last.pt")
    ratios = []
    for k, w2 in ck["true"]["model"].items():
        assert torch.equal(w2, ck["false"]["model"][k]), k  # the EMA does not touch training
        gap_on, gap_off = ck["true"]["ema"][k] - w2, ck["false"]["ema"][k] - w2
        if w2.is_floating_point() and gap_on.abs().max() > 1e-6:
            ratios.append((gap_off.norm() / gap_on.norm()).item())
    assert ratios
    assert ratios == pytest.approx([0.9 / (1 - 2 ** (-2 / 3))] * len(ratios), rel=1e-3)

def test_keep_last_makes_the_run_stand_for_its_last_weights(tiny_root, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_root, "train.keep=last", "train.ema_decay=0.9", "train.ema_warmup=false",
               "train.epochs=3"), run)
    ck = run / "checkpoints"
    assert resolve_checkpoint_path(run) == ck / "last.pt"  # the default of eval, predict, export
    assert resolve_checkpoint_path(run, "best") == ck / "best.pt"  # still chosen on validation
    info: dict = {}
    model, _, _ = load_model(run, info=info)
    assert info["path"] == str(ck / "last.pt")
    last = load_checkpoint(ck / "last.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, last["ema"][k]), k
    # `surgflow eval RUN` records the file it read, and says why
    res = evaluate_run(run, split="val", plots=False, quiet=True)
    saved = json.loads(Path(res["json"]).read_text())
    assert saved["checkpoint"] == "last"
    assert "checkpoint: last (the one the run keeps: train.keep)" in \
        saved["scores"]["phase"]["protocol"]["notes"][0]
    # a run recorded as keeping best.pt, or written before train.keep existed, reads best.pt
    text = (run / "config.yaml").read_text()
    assert "  keep: last\n" in text
    for recorded in (text.replace("keep: last", "keep: best"), text.replace("  keep: last\n", "")):
        (run / "config.yaml").write_text(recorded)
        assert resolve_checkpoint_path(run) == ck / "best.pt"
    (run / "config.yaml").write_text(text.replace("keep: last", "keep: newest"))
    with pytest.raises(SurgflowError, match=r"config\.yaml: train\.keep 'newest'"):
        resolve_checkpoint_path(run)
    with pytest.raises(ConfigError, match=r"train\.keep"):
        load_config(None, ["train.keep=newest"])


def _select(values, window):
    """Epochs (1-based) at which best.pt is written for validation `values`."""
    cfg = load_config(None, [f"train.best_window={window}"])
    state = TrainState(None, {}, "val/accuracy")  # the run state that records the best
    return [e for e, v in enumerate(values, 1)
            if state.record_validation(v, cfg.train.best_window, False, float(e))]


def test_best_window_does_not_keep_a_one_epoch_peak():
    values = [0.5, 0.9, 0.3, 0.8, 0.85]
    assert _select(values, 1) == [1, 2]  # the single peak at epoch 2 is kept
    # means of 2: 0.70, 0.60, 0.55, 0.825 -> written at epoch 2, then at 5
    assert _select(values, 2) == [2, 5]
    assert _select(values, 3) == [3, 4]  # means 0.567, 0.667, 0.65


def test_drop_path_rate_reaches_the_backbone():
    plain = build_backbone("test_resnet", norm="gn")
    sd = build_backbone("test_resnet", norm="gn", drop_path_rate=0.2)
    rates = [m.drop_prob for m in sd.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    assert not [m for m in plain.modules() if type(m).__name__ == "DropPath"]


@pytest.mark.parametrize("override, key", [("train.ema_decay=1.0", "train.ema_decay"),
                                           ("model.drop_path_rate=1.5", "model.drop_path_rate"),
                                           ("train.best_window=0", "train.best_window")])
def test_lever_values_out_of_range_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
