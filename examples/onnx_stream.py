"""Stream a video through a model exported with `surgflow export CHECKPOINT --onnx model.onnx`,
with only numpy, PyAV and onnxruntime (no torch, no surgflow).

    python examples/onnx_stream.py model.onnx video.mp4            # or rtsp://... / http://...
    python examples/onnx_stream.py model.onnx video.mp4 --fps 1

model.onnx.json (written beside the model) holds the frame size, fps, label names and the names
and shapes of the state tensors. Per frame: sample at the model's fps by timestamp, resize with
swscale to the model's size, feed float RGB [1, 3, H, W] in [0, 1] plus the state, get the
probabilities/minutes and the new state back. The outputs equal `surgflow predict --raw-frames`
(within 1e-4); plain `surgflow predict` also JPEG round-trips frames like a prepared dataset.
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import av
import numpy as np
import onnxruntime as ort


def sampled_frames(container, fps: float):
    """Yield (i, av.VideoFrame) for target times i / fps: the decoded frame closest in time, the
    later one on a tie (the rule `surgflow prepare` uses). Frames k and k + 1 split the targets at
    the midpoint of their actual timestamps, so variable-rate video is sampled right too; this
    holds one decoded frame back until the next one arrives."""
    stream = container.streams.video[0]
    rate = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
    step = Fraction(fps).limit_denominator(1000)
    i, pts0, prev, prev_t = 0, None, None, None
    for k, frame in enumerate(container.decode(stream)):
        if frame.pts is not None and stream.time_base is not None:
            pts0 = frame.pts if pts0 is None else pts0
            t = (frame.pts - pts0) * stream.time_base
        else:
            t = Fraction(k) / rate
        if prev is not None:
            while i / step < (prev_t + t) / 2:
                yield i, prev
                i += 1
        prev, prev_t = frame, t
    if prev is not None:  # the last frame serves up to half a nominal interval after it
        while i / step < prev_t + 1 / (2 * rate):
            yield i, prev
            i += 1


class OnnxStream:
    """One ONNX session plus the carried state; `step(av.VideoFrame or uint8 HWC RGB at size)`."""

    def __init__(self, onnx_path: str):
        with open(onnx_path + ".json") as f:
            self.info = json.load(f)
        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.H, self.W = self.info["preprocess"]["size"]
        self.fps = float(self.info["preprocess"]["fps"])
        self.outputs = list(self.info["outputs"])
        self.state_spec = self.info["state"]
        self.reset()

    def reset(self):
        """Start of a new video: the initial state."""
        self.state = {}
        for s in self.state_spec:
            if s["init"] == "zeros":
                self.state[s["input"]] = np.zeros(s["shape"], np.float32)
            else:
                self.state[s["input"]] = np.asarray(s["init"], np.float32).reshape(s["shape"])

    def step(self, frame) -> dict:
        if isinstance(frame, av.VideoFrame):  # swscale resize, as surgflow prepare does
            frame = frame.reformat(width=self.W, height=self.H, format="rgb24").to_ndarray()
        x = (frame.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]  # [1, 3, H, W]
        res = self.session.run(None, {"frame": x, **self.state})
        out = dict(zip(self.outputs, (r[0] for r in res[:len(self.outputs)])))
        for s, value in zip(self.state_spec, res[len(self.outputs):]):
            self.state[s["input"]] = value  # carry: state_out_i -> state_in_i
        return out


def stream_video(onnx_path: str, video: str, fps: float | None = None):
    """Yield (i, predictions) for every sampled frame of `video` (a file or a stream URL)."""
    model = OnnxStream(onnx_path)
    with av.open(video) as container:
        for i, frame in sampled_frames(container, fps or model.fps):
            yield i, model.step(frame)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", help="model.onnx written by `surgflow export` (model.onnx.json beside it)")
    ap.add_argument("video", help="video file or stream URL")
    ap.add_argument("--fps", type=float, default=None, help="sampling rate (default: the model's)")
    args = ap.parse_args()
    labels = json.load(open(args.onnx + ".json"))["labels"]
    t0 = time.perf_counter()
    for i, out in stream_video(args.onnx, args.video, args.fps):
        line = f"frame {i:5d} ({(time.perf_counter() - t0) * 1e3:6.1f} ms)"
        if "phase_prob" in out:
            p = int(np.argmax(out["phase_prob"]))
            line += f"  {labels['phases'][p]} {100 * out['phase_prob'][p]:.0f}%"
        if "anticipation_min" in out:
            line += "  " + " ".join(f"{n}={m:.1f}" for n, m in zip(labels["instruments"],
                                                               out["anticipation_min"]))
        print(line)
        t0 = time.perf_counter()


if __name__ == "__main__":
    main()
