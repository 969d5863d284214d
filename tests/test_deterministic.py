"""train.deterministic: two runs with the same seed give identical numbers and weights (CPU)."""
from __future__ import annotations

import csv

import torch

from surgflow.config import load_config
from surgflow.checkpoint_io import load_checkpoint
from surgflow.training.trainer import train


def _run(root, out, seed):
    cfg = load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=16",
        "model.dropout=0.2", "train.seq_len=16", "train.batch_size=2", "train.epochs=2",
        "train.lr=3e-3", "train.lr_schedule=cosine", "train.warmup_steps=2", "train.device=cpu",
        "train.deterministic=true", f"train.seed={seed}", "data.workers=1"])  # augmentation on
    train(cfg, out)
    with open(out / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "frames_per_s"} for r in csv.DictReader(f)]
    return rows, load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def test_same_seed_same_numbers(tiny_root, tmp_path):
    rows_a, wa = _run(tiny_root, tmp_path / "a", seed=7)
    rows_b, wb = _run(tiny_root, tmp_path / "b", seed=7)
    assert len(rows_a) == 2 and rows_a == rows_b  # losses, val metrics, grad norms, lr: all equal
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows_c, wc = _run(tiny_root, tmp_path / "c", seed=8)  # another seed: other numbers
    assert rows_c[0]["train/loss"] != rows_a[0]["train/loss"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
