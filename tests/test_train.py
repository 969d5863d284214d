"""`surgflow train`: a tiny run learns and writes its run dir; bad input fails with clear messages."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from surgflow.checkpoint_io import load_checkpoint
from surgflow.config import load_config
from surgflow.io_utils import SurgflowError
from surgflow.runs import load_model
from surgflow.training.trainer import train




def _over(root, *extra):
    return [f"data.root={root}", "data.split=auto", "model.backbone=test_convnext",
            "model.hidden=32", "train.seq_len=16", "train.lr=3e-3", "train.device=cpu",
            "train.log_every=1", *extra]


def test_cli_run_dir_learns_and_loads(tiny_root, tmp_path, capsys):
    from surgflow.cli import main

    out = tmp_path / "run"
    preset = "synthetic_phase_tiny"  # a preset by name (package data), from any directory
    rc = main(["train", str(preset), "--out", str(out),
               *sum((["--set", o] for o in _over(tiny_root, "train.epochs=4", "data.augment=false",
                                                           "train.batch_size=1")), [])])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"run directory: {out}" in printed and "val/accuracy" in printed
    for name in ("config.yaml", "log.txt", "metrics.csv", "tb", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (out / name).exists(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4]
    for key in ("step", "train/phase", "val/accuracy", "val/loss", "lr", "frames_per_s"):
        assert key in rows[0], key
    losses = [float(r["train/phase"]) for r in rows]
    assert losses[-1] < losses[0], f"training loss did not decrease: {losses}"
    # resolved config round-trips and names the dataset
    cfg = load_config(out / "config.yaml")
    assert cfg.data.root == str(tiny_root) and cfg.train.epochs == 4

    # checkpoints hold primitives/tensors only (weights_only) and the contract's keys
    ck = load_checkpoint(out / "checkpoints" / "best.pt")
    for key in ("config", "model", "optimizer", "epoch", "step", "step_in_epoch", "rng", "meta", "best"):
        assert key in ck, key
    for key in ("phase_names", "tool_names", "instruments", "horizon", "fps", "size", "preprocess",
                "dataset_root", "split", "causal"):
        assert key in ck["meta"], key
    assert ck["meta"]["size"] == [32, 56] and ck["meta"]["causal"] is True
    assert ck["best"]["metric"] == "val/accuracy" and ck["best"]["value"] == max(
        float(r["val/accuracy"]) for r in rows)
    model, cfg2, meta = load_model(out, which="best")
    assert not model.training and cfg2 == cfg and meta["phase_names"][0] == "Preparation"
    last, _, _ = load_model(out, which="last")
    with torch.no_grad():
        x = torch.rand(1, 5, 3, 32, 56)
        logits, _ = model(x)
        assert logits["phase"].shape == (1, 5, 7)
    weights = "ema" if cfg.train.ema_decay else "model"  # with EMA, the run stands for the average
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(),
                                                 load_checkpoint(out / "checkpoints/last.pt")[weights].values()))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_root, tmp_path):
    cfg = load_config(None, _over(tiny_root, "train.epochs=3", "train.lr=1e30",
                                  "train.checkpoint_every=1"))
    with pytest.raises(SurgflowError, match=r"non-finite .* at step \d+ .*video0\d@\d+.*last good"):
        train(cfg, tmp_path / "nan")
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert ck["step"] >= 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_bad_inputs(tiny_root, tmp_path):
    def fails(match, *extra, root=tiny_root):
        with pytest.raises(SurgflowError, match=match):
            train(load_config(None, _over(root, "train.max_steps=1", *extra)), tmp_path / "bad")

    fails(r"model\.backbone: unknown backbone 'convnext_nope'", "model.backbone=convnext_nope")
    fails(r"model\.head.*'transformer'", "model.head=transformer")
    fails(r"train\.batch_size: 5 lanes .* only 2 videos", "train.batch_size=5")
    fails(r"train\.seq_len: clips of T=500 frames do not fit; the longest training video has \d+",
          "train.strategy=clips", "train.seq_len=500")
    fails(r"task\.instruments: \['Stapler'\]", "task.tasks=[anticipation]", "task.instruments=[Stapler]")
    fails(r"data\.root: not set", root="")
    fails(r"train\.best_metric: 'val/recall'", "train.best_metric=val/recall")

    # a dataset without tool labels cannot train tools or anticipation
    notools = tmp_path / "notools"
    shutil.copytree(tiny_root, notools)
    manifest = json.loads((notools / "manifest.json").read_text())
    manifest["tool_names"] = []
    (notools / "manifest.json").write_text(json.dumps(manifest))
    fails(r"'tools' needs tool labels", "task.tasks=[phase,tools]", root=notools)
    fails(r"'anticipation' needs tool-presence labels", "task.tasks=[anticipation]", root=notools)
