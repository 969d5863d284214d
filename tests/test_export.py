"""`surgflow export --onnx`: the stateful one-frame step, parity with PyTorch over >= 100 streamed
frames, the JSON beside the model, and the torch-free streaming example."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")

from surgflow.cli import main  # noqa: E402
from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS  # noqa: E402

from _helpers import SIZE, make_checkpoint  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]






@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(d / "tiny.pt")
    onnx_path = d / "tiny.onnx"
    assert main(["export", str(ckpt), "--onnx", str(onnx_path), "--verify-frames", "100"]) == 0
    return ckpt, onnx_path


def test_export_writes_model_and_json_with_parity(exported, capsys):
    _, onnx_path = exported
    info = json.loads(Path(str(onnx_path) + ".json").read_text())
    assert info["parity"]["frames"] >= 100 and info["parity"]["max_abs_diff"] <= 1e-4
    assert info["preprocess"]["size"] == list(SIZE) and info["preprocess"]["fps"] == 1.0
    assert len(info["preprocess"]["mean"]) == 3 and len(info["preprocess"]["std"]) == 3
    assert info["labels"] == {"phases": CHOLEC80_PHASES, "tools": CHOLEC80_TOOLS,
                              "instruments": ANTICIPATION_INSTRUMENTS}
    assert info["horizon"] == 3.0
    assert [s["shape"] for s in info["state"]] == [[1, 1, 16], [1, 1, 16]]  # LSTM (h, c)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["frame", "state_in_0", "state_in_1"]
    assert [o.name for o in sess.get_outputs()] == ["phase_prob", "tools_prob", "anticipation_min",
                                                    "state_out_0", "state_out_1"]


def test_example_streams_video_like_pytorch_over_100_frames(exported, synthetic_raw, tmp_path):
    """examples/onnx_stream.py (numpy + av + onnxruntime only) == surgflow predict over >= 100
    streamed frames of a real video (fps 3), state carried through ONNX."""
    from surgflow.online.predict import predict_video
    from surgflow.online.predictor import OnlinePredictor

    ckpt, onnx_path = exported
    spec = importlib.util.spec_from_file_location("onnx_stream", ROOT / "examples" / "onnx_stream.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    video = Path(synthetic_raw) / "videos" / "video01.mp4"
    ours = np.stack([o["phase_prob"] for _, o in example.stream_video(str(onnx_path), str(video), 3.0)])
    ant = np.stack([o["anticipation_min"] for _, o in example.stream_video(str(onnx_path), str(video), 3.0)])
    ref = predict_video(OnlinePredictor.from_checkpoint(ckpt), str(video), tmp_path, fps=3.0,
                        match_store=False, log=lambda m: None)["predictions"]
    assert len(ours) == len(ref["phase_prob"]) >= 100
    diff = max(np.abs(ours - ref["phase_prob"]).max(), np.abs(ant - ref["anticipation_min"]).max())
    print(f"onnx example vs pytorch predict over {len(ours)} frames: max abs diff {diff:.3g}")
    assert diff <= 1e-4
    assert np.abs(np.diff(ours, axis=0)).max() > 1e-5  # the stream actually varies


def test_tcn_export_and_offline_refusal(tmp_path, capsys):
    from surgflow.online.export import export_onnx
    from surgflow.runs import load_model

    model, _, meta = load_model(make_checkpoint(tmp_path / "tcn.pt", head="tcn"))
    info = export_onnx(model, meta, tmp_path / "tcn.onnx", verify_frames=100, log=lambda m: None)
    assert len(info["state"]) == 6 and info["parity"]["max_abs_diff"] <= 1e-4  # 2 stages x 3 layers
    offline = make_checkpoint(tmp_path / "bilstm.pt", head="bilstm", online=False)
    assert main(["export", str(offline), "--onnx", str(tmp_path / "b.onnx")]) == 2
    assert "non-causal" in capsys.readouterr().err
    assert not (tmp_path / "b.onnx").exists()
    assert main(["export", str(tmp_path / "tcn.pt"), "--onnx", str(tmp_path / "x.pt")]) == 2
    assert ".onnx" in capsys.readouterr().err


def test_disk_full_during_export_is_a_message_without_the_fallbacks_error(tmp_path, monkeypatch,
                                                                          capsys):
    """ENOSPC while the exporter writes: a disk-full message naming the folder and free space,
    not 'ONNX export failed' with the dynamo fallback's unrelated "No module named 'onnxscript'"."""
    import errno

    import torch

    def full(model, args, f, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out" / "m.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--verify-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and str(out.parent) in err and "free" in err, err
    assert "onnxscript" not in err and "export failed" not in err, err
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))


def test_example_samples_variable_rate_video_like_prepare():
    """examples/onnx_stream.py keeps its own copy of the sampling rule (it imports no surgflow):
    on variable-rate timestamps it picks the same frame for every target as
    surgflow.data.video.sample_by_timestamp."""
    from fractions import Fraction
    from types import SimpleNamespace

    from surgflow.data.video import sample_by_timestamp

    spec = importlib.util.spec_from_file_location("onnx_stream", ROOT / "examples" / "onnx_stream.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    pts = np.cumsum([0] + list(np.random.default_rng(1).choice([20, 40, 60], 99)))  # ms
    frames = [SimpleNamespace(pts=int(p)) for p in pts]
    rate = Fraction(len(pts) - 1, int(pts[-1])) * 1000
    stream = SimpleNamespace(average_rate=rate, guessed_rate=None, base_rate=None,
                             time_base=Fraction(1, 1000))
    container = SimpleNamespace(streams=SimpleNamespace(video=[stream]), decode=lambda s: iter(frames))
    for fps in (1, 5, 10, 30):
        ours = [(i, f.pts) for i, f in example.sampled_frames(container, fps)]
        ref = [(i, f.pts) for i, f in sample_by_timestamp(frames, Fraction(1, 1000), rate, fps)]
        assert ours == ref, fps
