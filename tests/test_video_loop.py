"""The one whole-video loop (models/video_loop.py): trainer validation reports exactly what
`surgflow eval` scores on the same videos, for causal and offline heads, whatever the training
precision; the online predictor and the chunked loop agree."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from surgflow.config import load_config


@pytest.mark.parametrize("head,online,precision", [("lstm", True, "bf16"), ("tcn", True, "fp32"),
                                                   ("bilstm", False, "fp32"),
                                                   ("tcn_centered", False, "bf16")])
def test_validation_equals_eval(tiny_root, tmp_path, head, online, precision):
    from surgflow.evaluation.runner import evaluate_run
    from surgflow.training.trainer import train

    cfg = load_config(None, [
        f"data.root={tiny_root}", "data.split=auto", "data.augment=false",
        "model.backbone=test_resnet", "model.norm=gn", f"model.head={head}",
        f"task.online={str(online).lower()}", "model.hidden=16", "model.tcn_layers=3",
        "model.tcn_maps=8", "task.tasks=[phase,anticipation]", "train.seq_len=8",
        "train.batch_size=1", "train.epochs=1", "train.max_steps=3", "train.device=cpu",
        f"train.precision={precision}", "train.lr=3e-3"])
    res = train(cfg, tmp_path / "run")
    val = res["val"]
    ev = evaluate_run(tmp_path / "run", split="val", checkpoint="last", plots=False, quiet=True)
    acc = ev["phase"]["video"]["accuracy"]["mean"] / 100
    assert val["val/accuracy"] == pytest.approx(acc, abs=1e-9), (val, acc)
    for k in ("wMAE", "inMAE", "outMAE"):
        e = ev["anticipation"]["mean"][k]
        if np.isfinite(e):
            assert val[f"val/{k}"] == pytest.approx(e, rel=1e-6, abs=1e-7), (k, val, e)


def test_online_predictor_equals_the_loop(tiny_root, tmp_path):
    """Frame-by-frame (T=1) through OnlinePredictor == the chunked whole-video loop."""
    from _helpers import make_checkpoint
    from surgflow.data.store import PreparedDataset
    from surgflow.models.video_loop import run_video
    from surgflow.online.predictor import OnlinePredictor
    from surgflow.runs import load_model

    ckpt = make_checkpoint(tmp_path / "m.pt", head="tcn")
    model, _, meta = load_model(ckpt)
    ds = PreparedDataset(tiny_root, split="all")
    v = ds.videos[0]
    run = run_video(model, ds, v, chunk=7, horizon=3.0, instruments=meta["instruments"])
    ref = model.decode(run.outputs)["phase_prob"][0]
    pred = OnlinePredictor(model, meta)
    frames = ds.read_frames(v, 0, 12)
    online = torch.stack([torch.from_numpy(pred.step(f)["phase_prob"]) for f in frames])
    torch.testing.assert_close(online, ref[:12], atol=1e-5, rtol=1e-5)
