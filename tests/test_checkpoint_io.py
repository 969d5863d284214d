"""Checkpoint files have one reader/writer (issue 22, item 3): surgflow/checkpoint_io.py holds the
only torch.load call of the package, always with weights_only=True."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from surgflow.checkpoint_io import load_checkpoint, save_checkpoint, weights_only_load
from surgflow.io_utils import SurgflowError

PKG = Path(__file__).resolve().parents[1] / "surgflow"
HOME = PKG / "checkpoint_io.py"
# torch.load, also as `from torch import load` or `torch.serialization.load`
LOAD = re.compile(r"torch\s*\.\s*(serialization\s*\.\s*)?load\s*\(|from\s+torch(\.serialization)?\s+"
                  r"import\s+[^\n]*\bload\b")


def test_torch_load_only_in_checkpoint_io():
    found = [f"{p.relative_to(PKG.parent)}:{i}" for p in sorted(PKG.rglob("*.py")) if p != HOME
             for i, line in enumerate(p.read_text().splitlines(), 1) if LOAD.search(line)]
    assert not found, f"torch.load outside surgflow/checkpoint_io.py: {', '.join(found)}"
    calls = LOAD.findall(HOME.read_text())
    assert len(calls) == 1 and "weights_only=True" in HOME.read_text()


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "obj": object()}, path)
    with pytest.raises(Exception):
        weights_only_load(path)
    with pytest.raises(SurgflowError, match="Python objects"):
        load_checkpoint(path)
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
