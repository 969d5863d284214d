"""RunMeta: the checkpoint's run metadata as one typed record; older meta dicts still load."""
from __future__ import annotations

import pytest
import torch

from _helpers import make_checkpoint
from surgflow.checkpoint_io import save_checkpoint
from surgflow.config import from_dict, to_dict
from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES
from surgflow.models.model import build_model
from surgflow.online.predictor import OnlinePredictor
from surgflow.runs import RunMeta, load_model


def _model(horizon=5.0, head="lstm", online=True):
    cfg = from_dict({"model": {"backbone": "test_convnext", "hidden": 8, "head": head},
                     "task": {"tasks": ["phase", "anticipation"], "horizon": horizon, "online": online}})
    torch.manual_seed(0)
    return cfg, build_model(cfg, len(CHOLEC80_PHASES), 0, len(ANTICIPATION_INSTRUMENTS), size=(32, 56))


def test_round_trip_keeps_every_field(tmp_path):
    _, model, meta = load_model(make_checkpoint(tmp_path / "m.pt", fps=2.0))
    assert isinstance(meta, RunMeta)
    again = RunMeta.from_dict(meta.to_dict())
    assert again == meta
    d = meta.to_dict()
    assert d["size"] == [32, 56] and d["fps"] == 2.0 and d["horizon"] == 3.0 and d["causal"] is True
    assert meta["phase_names"] == list(CHOLEC80_PHASES) == meta.phase_names  # dict-style reads


def test_old_minimal_meta_is_completed_from_config_and_model(tmp_path):
    cfg, model = _model(horizon=5.0)
    path = tmp_path / "old.pt"
    old = {"phase_names": list(CHOLEC80_PHASES), "tool_names": [],
           "instruments": list(ANTICIPATION_INSTRUMENTS)}  # no horizon, fps, size, preprocess, causal
    save_checkpoint(path, {"config": to_dict(cfg), "model": model.state_dict(), "meta": old})
    _, _, meta = load_model(path)
    assert meta.horizon == 5.0  # from the checkpoint's config, not a default
    assert meta.size == (32, 56) and meta.preprocess["size"] == [32, 56]  # from the model's buffers
    assert meta.causal is True and meta.fps is None and meta.split == "all"


def test_one_horizon_for_eval_and_online_when_meta_lacks_it():
    """Before: predict_dataset read a missing horizon as 3.0 and OnlinePredictor as 0.0."""
    _, model = _model(horizon=5.0)
    meta = {"phase_names": list(CHOLEC80_PHASES), "instruments": list(ANTICIPATION_INSTRUMENTS),
            "size": [32, 56]}
    assert RunMeta.coerce(meta, model).horizon == 5.0  # what evaluation/runner.py now reads
    assert OnlinePredictor(model.eval(), meta).horizon == 5.0


def test_refusals_name_the_problem():
    with pytest.raises(SurgflowError, match="phase_names"):
        RunMeta.from_dict({"tool_names": []})
    with pytest.raises(SurgflowError, match="no horizon"):
        RunMeta.from_dict({"phase_names": ["a"], "instruments": ["Clipper"]})
    with pytest.raises(SurgflowError, match="unknown keys colour"):
        RunMeta.from_dict({"phase_names": ["a"], "colour": 1})
    assert RunMeta.from_dict({"phase_names": ["a"]}).horizon == 0.0  # no instruments: never used


def test_offline_meta_refused_online():
    _, model = _model()
    meta = RunMeta.from_dict({"phase_names": list(CHOLEC80_PHASES), "size": [32, 56],
                              "instruments": list(ANTICIPATION_INSTRUMENTS), "horizon": 5.0,
                              "causal": False})
    with pytest.raises(SurgflowError, match="offline"):
        OnlinePredictor(model.eval(), meta)
