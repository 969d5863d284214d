"""`surgflow export --onnx`: the stateful one-frame step as an ONNX graph.

Graph (batch 1, one frame per call):
    inputs:  frame        float32 [1, 3, H, W]  RGB in [0, 1], already resized to `size`
             state_in_i   the temporal state (shapes in the JSON; zeros = start of a video)
    outputs: phase_prob [1, P], tools_prob [1, K], anticipation_min [1, I] (the model's tasks)
             state_out_i  feed back as state_in_i for the next frame
Normalisation (mean/std) happens inside the graph. `FILE.json` beside the model holds what a
deployment needs without surgflow: preprocessing (size, fps, resampling), label names, horizon,
input/output/state names and shapes, and the measured parity against PyTorch.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from surgflow.data.video import frame_to_rgb, open_video
from surgflow.io_utils import (SurgflowError, atomic_path, atomic_write_json, heartbeat, progress,
                               require_extra)
from surgflow.online.predictor import OnlinePredictor
from surgflow.outputs import disk_full_error, is_disk_full

OUTPUT_KEYS = ("phase_prob", "tools_prob", "anticipation_min")


class OnnxStep(torch.nn.Module):
    """model.forward on one frame with explicit state in and out, decoded to probabilities/minutes."""

    def __init__(self, model: torch.nn.Module, keys: list[str], num_state: int):
        super().__init__()
        self.model = model
        self.keys = list(keys)
        self.num_state = num_state

    def forward(self, frame: torch.Tensor, *state: torch.Tensor):
        # frame: [1, 3, H, W] -> [1, T=1, 3, H, W]
        outputs, new_state = self.model(frame[:, None], tuple(state), None)
        decoded = self.model.decode(outputs)
        return tuple(decoded[k][:, 0] for k in self.keys) + tuple(new_state)


def _state_tuple(state) -> tuple[torch.Tensor, ...]:
    if state is None:
        return ()
    if isinstance(state, torch.Tensor):
        return (state,)
    out = tuple(state)
    for s in out:
        if not isinstance(s, torch.Tensor):
            raise SurgflowError("the model's state is not a flat tuple of tensors; ONNX export needs one")
    return out


def stream_frames(n: int, size: tuple[int, int], seed: int = 0, video: str | None = None) -> np.ndarray:
    """n frames float32 [n, 3, H, W] in [0, 1] for parity checks: the first n sampled frames of
    `video` (at 1 frame per decoded frame, prepare's resize) or smooth deterministic noise."""
    H, W = size
    if video is not None:
        frames = []
        container, _, _ = open_video(video)
        try:
            for vf in container.decode(video=0):
                frames.append(frame_to_rgb(vf, (H, W)))
                if len(frames) >= n:
                    break
        finally:
            container.close()
        if frames:
            arr = np.stack(frames).astype(np.float32) / 255.0
            reps = -(-n // len(arr))
            return np.ascontiguousarray(np.tile(arr, (reps, 1, 1, 1))[:n].transpose(0, 3, 1, 2))
    g = torch.Generator().manual_seed(seed)
    # Random walk in a low-resolution image, upsampled: frames that change smoothly like video.
    base = torch.rand(1, 3, 8, 8, generator=g)
    steps = torch.randn(n, 3, 8, 8, generator=g) * 0.05
    low = (base + torch.cumsum(steps, 0)).clamp(0, 1)
    frames = torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    return frames.clamp(0, 1).numpy().astype(np.float32)


def export_onnx(model: torch.nn.Module, meta, path: str | Path, verify_frames: int = 100,
                video: str | None = None, opset: int = 17, log=print) -> dict:
    """Export, verify against PyTorch over `verify_frames` streamed frames, write `path` and
    `path.json`. Returns the JSON dict (with parity["max_abs_diff"])."""
    require_extra("onnx", "onnx", "`surgflow export`")
    ort = require_extra("onnxruntime", "onnx", "`surgflow export`")

    path = Path(path)
    if path.suffix != ".onnx":
        raise SurgflowError(f"--onnx {path}: the file name must end in .onnx")
    predictor = OnlinePredictor(model, meta, device="cpu")  # refuses offline models
    model = predictor.model
    H, W = predictor.size
    state0 = _state_tuple(model.init_state(1, torch.device("cpu")))
    frame0 = torch.zeros(1, 3, H, W)
    with torch.no_grad():
        decoded = model.decode(model(frame0[:, None], state0, None)[0])
    keys = [k for k in OUTPUT_KEYS if k in decoded]
    step = OnnxStep(model, keys, len(state0)).eval()
    in_names = ["frame"] + [f"state_in_{i}" for i in range(len(state0))]
    out_names = keys + [f"state_out_{i}" for i in range(len(state0))]

    errors = []
    with atomic_path(path) as tmp:
        for dynamo in (False, True):  # legacy TorchScript exporter handles LSTMs best; dynamo as fallback
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    kwargs = dict(dynamo=dynamo, opset_version=opset, input_names=in_names,
                                  output_names=out_names)
                    if dynamo:
                        kwargs["external_data"] = False
                    with heartbeat(f"export: tracing the one-frame step to ONNX "
                                   f"({'dynamo' if dynamo else 'torchscript'} exporter)"):
                        torch.onnx.export(step, (frame0,) + state0, str(tmp), **kwargs)
                exporter = "torchscript" if not dynamo else "dynamo"
                break
            except Exception as e:  # try the other exporter, report both if both fail
                if is_disk_full(e):  # no exporter can help: say where and how much space is left
                    raise disk_full_error(e, path.parent, f"{path} was not written; free space or "
                                          f"pass another --onnx path") from None
                if dynamo and isinstance(e, ModuleNotFoundError):  # the fallback's optional package
                    errors.append(f"dynamo exporter (fallback): not available ({e.name} is not "
                                  f"installed)")
                else:
                    errors.append(f"{'dynamo' if dynamo else 'legacy'} exporter: "
                                  f"{type(e).__name__}: {e}")
        else:
            raise SurgflowError("ONNX export failed:\n" + "\n".join(errors))

        # Parity: stream frames through PyTorch (the online predictor's path) and onnxruntime.
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        frames = stream_frames(verify_frames, (H, W), video=video)
        ort_state = [s.numpy() for s in state0]
        predictor.reset()
        max_diff = {k: 0.0 for k in keys}
        for f in progress(frames, desc="export: parity PyTorch vs onnxruntime", unit="frame"):
            ref = predictor.step_tensor(torch.from_numpy(f)[None, None])
            res = sess.run(None, {"frame": f[None], **{f"state_in_{i}": s for i, s in enumerate(ort_state)}})
            ort_state = res[len(keys):]
            for j, k in enumerate(keys):
                max_diff[k] = max(max_diff[k], float(np.abs(res[j][0] - ref[k].numpy()).max()))
        worst = max(max_diff.values()) if max_diff else 0.0
        if not worst <= 1e-4:
            raise SurgflowError(f"ONNX parity check failed: max abs diff {worst:.3g} > 1e-4 over "
                                f"{len(frames)} frames ({max_diff}); the file was not written")

    pre = dict(getattr(model, "preprocess", None) or predictor.meta.preprocess)
    info = {
        "format": "surgflow-onnx-step",
        "version": 1,
        "exporter": exporter,
        "opset": opset,
        "input": {"name": "frame", "shape": [1, 3, H, W], "dtype": "float32",
                  "layout": "RGB, NCHW, values in [0, 1] (uint8 / 255), resized to size"},
        "preprocess": {
            "size": [H, W],
            "fps": predictor.fps,
            "resize": "bilinear via PyAV/swscale (VideoFrame.reformat), as `surgflow prepare`",
            "mean": [float(x) for x in pre.get("mean", [])],
            "std": [float(x) for x in pre.get("std", [])],
            "normalisation": "inside the graph: do not subtract mean/std yourself",
        },
        "labels": {"phases": predictor.phase_names, "tools": predictor.tool_names,
                   "instruments": predictor.instruments},
        "horizon": predictor.horizon,
        "outputs": {k: {"name": k, "shape": [1] + list(decoded[k].shape[2:])} for k in keys},
        "state": [{"input": f"state_in_{i}", "output": f"state_out_{i}", "shape": list(s.shape),
                   "dtype": str(s.dtype).replace("torch.", ""),
                   "init": "zeros" if not bool(s.any()) else s.flatten().tolist()}
                  for i, s in enumerate(state0)],
        "usage": "for each frame: outputs = run(frame, state_in_*); state_in_* <- state_out_*; "
                 "start each video from the init state",
        "parity": {"frames": int(len(frames)), "max_abs_diff": worst,
                   "per_output": max_diff, "tolerance": 1e-4,
                   "frames_from": video or "synthetic smooth noise"},
    }
    atomic_write_json(str(path) + ".json", info)
    log(f"exported {path} ({exporter} exporter, opset {opset}); parity over {len(frames)} streamed "
        f"frames: max abs diff {worst:.3g} (tolerance 1e-4)")
    return info


def load_export_info(path: str | Path) -> dict:
    p = Path(str(path) + ".json")
    if not p.is_file():
        raise SurgflowError(f"{p} not found; it is written by `surgflow export` beside the .onnx file")
    return json.loads(p.read_text())
