"""OnlinePredictor: constant state, reset, refusal of offline models, frame validation, and
streaming == offline (predict on the raw mp4 vs predict_dataset on the prepared store)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")

from surgflow.config import from_dict  # noqa: E402
from surgflow.io_utils import SurgflowError  # noqa: E402
from surgflow.labels import CHOLEC80_PHASES  # noqa: E402
from surgflow.online.predictor import OnlinePredictor  # noqa: E402
from surgflow.runs import load_model  # noqa: E402

from _helpers import SIZE, make_checkpoint  # noqa: E402






@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _frames(n, h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3)).astype(np.int16)
    return [np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def test_step_outputs_and_reset_gives_identical_replay(ckpt):
    pred = OnlinePredictor.from_checkpoint(ckpt)
    frames = _frames(12)
    first = [pred.step(f) for f in frames]
    out = first[0]
    assert out["phase_prob"].shape == (7,) and abs(out["phase_prob"].sum() - 1) < 1e-5
    assert out["phase"] in CHOLEC80_PHASES and out["phase"] == CHOLEC80_PHASES[out["phase_prob"].argmax()]
    assert out["tools_prob"].shape == (7,) and ((out["tools_prob"] >= 0) & (out["tools_prob"] <= 1)).all()
    assert out["anticipation_min"].shape == (5,)
    assert ((out["anticipation_min"] >= 0) & (out["anticipation_min"] <= 3.0 + 1e-6)).all()
    # The state is carried: the same frame gives a different output later in the video.
    again = pred.step(frames[0])
    assert np.abs(again["phase_prob"] - first[0]["phase_prob"]).max() > 1e-7
    # The state has a constant size: nothing grows with the number of frames seen.
    shapes = [tuple(s.shape) for s in pred.state]
    for f in frames:
        pred.step(f)
    assert [tuple(s.shape) for s in pred.state] == shapes
    # reset(): the same video replays bit-identically.
    pred.reset()
    second = [pred.step(f) for f in frames]
    for a, b in zip(first, second):
        for k in ("phase_prob", "tools_prob", "anticipation_min"):
            np.testing.assert_array_equal(a[k], b[k])
    assert second[-1]["frame"] == len(frames) - 1


def test_tcn_ring_buffer_state_is_constant_and_matches_whole_sequence(tmp_path):
    path = make_checkpoint(tmp_path / "tcn.pt", head="tcn")
    pred = OnlinePredictor.from_checkpoint(path)
    frames = _frames(10, *SIZE)
    outs = np.stack([pred.step(f)["phase_prob"] for f in frames])
    shapes = [tuple(s.shape) for s in pred.state]
    pred.step(frames[0])
    assert [tuple(s.shape) for s in pred.state] == shapes
    # Frame by frame == the whole clip at once (T=10).
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()[None] / 255.0
    with torch.no_grad():
        whole = pred.model.decode(pred.model(x)[0])["phase_prob"][0].numpy()
    assert np.abs(outs - whole).max() <= 1e-5


def test_offline_model_is_refused_with_reason(tmp_path):
    path = make_checkpoint(tmp_path / "bilstm.pt", head="bilstm", online=False)
    with pytest.raises(SurgflowError, match="non-causal"):
        OnlinePredictor.from_checkpoint(path)
    model, _, meta = load_model(path)
    with pytest.raises(SurgflowError, match="surgflow eval"):
        OnlinePredictor(model, meta)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 48, 80), np.uint8), "channels-first"),
    (np.zeros((48, 80), np.uint8), "grayscale"),
    (np.zeros((48, 80, 4), np.uint8), "RGBA"),
    (np.zeros((48, 80, 1), np.uint8), "grayscale"),
    (np.full((48, 80, 3), 200.0, np.float32), "divide by 255"),
    (np.zeros((1, 48, 80, 3), np.uint8), "one frame"),
    (torch.zeros(48, 80, 3), "permute"),
    (np.zeros((48, 80, 3), np.int64), "dtype"),
    (np.full((48, 80, 3), np.nan, np.float32), "NaN"),
])
def test_bad_frames_raise_with_the_fix(ckpt, bad, message):
    pred = OnlinePredictor.from_checkpoint(ckpt)
    with pytest.raises(SurgflowError, match=message):
        pred.step(bad)
    assert pred.frame_index == 0  # a rejected frame does not advance the state


def test_frame_types_agree_and_any_size_is_resized(ckpt):
    pred = OnlinePredictor.from_checkpoint(ckpt)
    f = _frames(1, *SIZE)[0]
    a = pred.step(f)["phase_prob"]
    pred.reset()
    b = pred.step(torch.from_numpy(f).permute(2, 0, 1))["phase_prob"]  # torch uint8 CHW
    pred.reset()
    c = pred.step(f.astype(np.float32) / 255.0)["phase_prob"]  # numpy float HWC in [0, 1]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    pred.reset()
    big = pred.step(np.ascontiguousarray(np.repeat(np.repeat(f, 3, 0), 3, 1)))  # 96x168 -> 32x56
    assert big["phase_prob"].shape == (7,)
    assert pred.preprocess(np.zeros((100, 200, 3), np.uint8)).shape == (1, 1, 3, *SIZE)


@pytest.fixture(scope="module")
def trained_run(prepared_synthetic, tmp_path_factory):
    """A tiny model trained for two steps with the real trainer on the shared prepared dataset."""
    from surgflow.training.trainer import train

    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = from_dict({
        "data": {"root": str(prepared_synthetic), "split": "auto", "augment": False},
        "model": {"backbone": "test_convnext", "hidden": 16},
        "task": {"tasks": ["phase", "tools", "anticipation"]},
        "train": {"max_steps": 2, "seq_len": 8, "lr": 1e-3, "device": "cpu", "log_every": 1},
    })
    train(cfg, out)
    return out


def test_streaming_equals_offline_eval(trained_run, synthetic_raw, prepared_synthetic, tmp_path):
    """predict on the raw mp4 == predict_dataset (what `surgflow eval` runs) on the prepared store."""
    from surgflow.data.store import PreparedDataset
    from surgflow.evaluation.runner import predict_dataset
    from surgflow.online.predict import predict_video

    video = "video04"
    pred = OnlinePredictor.from_checkpoint(trained_run)
    online = predict_video(pred, synthetic_raw / "videos" / f"{video}.mp4", tmp_path, log=lambda m: None)
    model, _, meta = load_model(trained_run)
    ds = PreparedDataset(prepared_synthetic, split="auto")
    offline = predict_dataset(model, ds, [video], meta, chunk=16)[video]
    n = ds.num_frames(video)  # prepare drops unlabelled trailing frames; predict keeps all decoded
    assert n >= 25 and online["frames"] >= n
    worst = 0.0
    for key in ("phase_prob", "tools_prob", "anticipation_min"):
        a, b = online["predictions"][key][:n], offline[key]
        assert a.shape == b.shape
        worst = max(worst, float(np.abs(a - b).max()))
    print(f"streaming vs offline max abs diff over {n} frames: {worst:.3g}")
    assert worst <= 1e-5
    # Not trivially equal: the model's outputs change over the video.
    assert np.abs(np.diff(offline["phase_prob"], axis=0)).max() > 1e-4
