"""Online prediction: one raw RGB frame in, the prediction for that frame out, state carried.

The predictor owns the model's preprocessing (resize to the checkpoint's frame size with the same
resampling `surgflow prepare` uses, then [0, 1] floats; the model normalises with its own mean/std),
so a user passes frames exactly as a camera or decoder gives them. Each `step` runs the model on a
single frame (T=1) with the carried temporal state (LSTM hidden state, causal TCN ring buffer), so
the cost per frame does not grow with the length of the video.

    from surgflow.online.predictor import OnlinePredictor
    pred = OnlinePredictor.from_checkpoint("runs/exp1")
    for frame in frames:                  # np.uint8 [H, W, 3] RGB, any size
        out = pred.step(frame)            # out["phase"], out["phase_prob"], out["anticipation_min"]
    pred.reset()                          # next video
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from surgflow.io_utils import SurgflowError
from surgflow.models.video_loop import ChunkStepper
from surgflow.online.predict import resize_array  # same resampler as the video path
from surgflow.runs import RunMeta, load_model

FRAME_HELP = ("pass one RGB frame: a numpy array uint8 [H, W, 3] (values 0-255) or float [H, W, 3] "
              "in [0, 1], or a torch tensor [3, H, W] (uint8, or float in [0, 1])")


def resize_rgb(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [H, W, 3] with the resampling `surgflow prepare` uses.

    Frames that already have the target size pass through untouched, so frames read from a
    prepared store (or resized by `frames_from_video`) reach the model bit-identical to eval.
    """
    H, W = int(size[0]), int(size[1])
    if frame.shape[0] == H and frame.shape[1] == W:
        return frame

    return resize_array(frame, (H, W))


def _check_numpy(frame: np.ndarray) -> np.ndarray:
    """Validate a numpy frame and return uint8 HWC RGB."""
    if frame.ndim == 2:
        raise SurgflowError(f"got a grayscale frame of shape {frame.shape}; the model needs RGB: "
                            "np.repeat(frame[..., None], 3, axis=-1). " + FRAME_HELP)
    if frame.ndim == 4 and frame.shape[0] == 1:
        raise SurgflowError(f"got a batch of shape {frame.shape}; step() takes one frame: frame[0]")
    if frame.ndim != 3:
        raise SurgflowError(f"got an array of shape {frame.shape} (ndim {frame.ndim}); " + FRAME_HELP)
    if frame.shape[-1] != 3:
        if frame.shape[0] in (1, 3, 4) and frame.shape[-1] not in (1, 4):
            raise SurgflowError(f"got shape {frame.shape}, which looks channels-first (CHW); numpy "
                                "frames are channels-last: frame.transpose(1, 2, 0)")
        if frame.shape[-1] == 4:
            raise SurgflowError(f"got shape {frame.shape}: 4 channels (RGBA?); drop alpha: frame[..., :3]")
        if frame.shape[-1] == 1:
            raise SurgflowError(f"got shape {frame.shape}: one channel (grayscale); the model needs "
                                "RGB: np.repeat(frame, 3, axis=-1)")
        raise SurgflowError(f"got shape {frame.shape}: expected 3 channels last. " + FRAME_HELP)
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise SurgflowError(f"got a frame of shape {frame.shape}; it is too small to be an image")
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating):
        if not np.isfinite(frame).all():
            raise SurgflowError("the frame contains NaN or inf values")
        lo, hi = float(frame.min()), float(frame.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (looks like 0-255 values: pass uint8 or divide by 255)" if hi <= 255.0 else ""
            raise SurgflowError(f"float frame values span [{lo:.3g}, {hi:.3g}]; floats must lie in "
                                f"[0, 1]{hint}")
        # Quantise like a decoded frame so float and uint8 inputs go through one resize path.
        return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    raise SurgflowError(f"unsupported frame dtype {frame.dtype}; " + FRAME_HELP)


def to_hwc_uint8(frame: Any) -> np.ndarray:
    """Validate any accepted frame type and return a contiguous uint8 [h, w, 3] RGB array."""
    if isinstance(frame, torch.Tensor):
        t = frame.detach().cpu()
        if t.ndim == 3 and t.shape[0] != 3 and t.shape[-1] == 3:
            raise SurgflowError(f"got a torch tensor of shape {tuple(t.shape)} (channels last); "
                                "torch frames are channels-first [3, H, W]: frame.permute(2, 0, 1)")
        if t.ndim == 3 and t.shape[0] != 3:
            raise SurgflowError(f"got a torch tensor of shape {tuple(t.shape)}; expected [3, H, W]: "
                                + FRAME_HELP)
        if t.ndim != 3:
            raise SurgflowError(f"got a torch tensor of shape {tuple(t.shape)}; " + FRAME_HELP)
        arr = t.permute(1, 2, 0).numpy()
        if t.dtype not in (torch.uint8,) and not t.is_floating_point():
            raise SurgflowError(f"unsupported tensor dtype {t.dtype}; " + FRAME_HELP)
        return np.ascontiguousarray(_check_numpy(arr))
    if not isinstance(frame, np.ndarray):
        try:  # PIL images and other array-likes
            frame = np.asarray(frame)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise SurgflowError(f"cannot read a frame from {type(frame).__name__}: {e}") from e
        if frame.dtype == object:
            raise SurgflowError(f"cannot read a frame from {type(frame).__name__}; " + FRAME_HELP)
    arr = _check_numpy(frame)
    if not arr.flags.writeable or not arr.flags.c_contiguous:  # torch wants its own writable copy
        arr = np.array(arr, order="C")
    return arr


class OnlinePredictor:
    """Causal one-frame-at-a-time inference with carried state.

    `model` follows the SurgflowModel contract; `meta` is the checkpoint's RunMeta (or its dict).
    """

    def __init__(self, model: torch.nn.Module, meta, device: str | torch.device = "cpu"):
        meta = RunMeta.coerce(meta, model)
        if not (getattr(model, "is_causal", True) and meta.causal):
            raise SurgflowError(
                "this checkpoint is an offline (non-causal) model: its temporal head looks at future "
                "frames (e.g. bilstm or tcn_centered), so it cannot predict online one frame at a "
                "time. Train with task.online=true and a causal head (lstm, gru, tcn), or use "
                "`surgflow eval` for offline analysis of whole videos.")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        pre = dict(getattr(model, "preprocess", None) or meta.preprocess)
        size = meta.size or pre.get("size")
        if size is None:
            raise SurgflowError("the checkpoint's meta has no frame size ('size'); re-save it with "
                                "surgflow >= 0.1")
        self.size = (int(size[0]), int(size[1]))
        self.fps = meta.fps or 1.0  # not recorded (hand-made checkpoints): 1 fps, the paper's rate
        self.phase_names = list(meta.phase_names)
        self.tool_names = list(meta.tool_names)
        self.instruments = list(meta.instruments)
        self.horizon = meta.horizon
        self.reset()

    @classmethod
    def from_checkpoint(cls, path_or_run: str, which: str = "kept", device: str = "cpu") -> "OnlinePredictor":
        model, _cfg, meta = load_model(path_or_run, which=which, device=device)
        return cls(model, meta, device=device)

    def reset(self) -> None:
        """Forget the past: the next frame starts a new video."""
        self.stepper = ChunkStepper(self.model, self.device)  # the loop `surgflow eval` runs

    @property
    def state(self) -> tuple:
        """Carried temporal state (LSTM (h, c), TCN ring buffers); zeros before the first frame."""
        if self.stepper.state is None:
            return self.model.init_state(1, self.device)
        return self.stepper.state

    @property
    def frame_index(self) -> int:
        return self.stepper.frames_seen

    def preprocess(self, frame: Any) -> torch.Tensor:
        """Raw RGB frame -> uint8 [1, 1, 3, H, W] on the model's device (the model converts it to
        [0, 1] floats itself, as in `surgflow eval`)."""
        arr = resize_rgb(to_hwc_uint8(frame), self.size)  # uint8 [H, W, 3]
        return torch.from_numpy(arr).to(self.device).permute(2, 0, 1)[None, None]  # [1, 1, 3, H, W]

    @torch.no_grad()
    def step_tensor(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One preprocessed frame [1, 1, 3, H, W] (uint8, or float in [0, 1]) -> decoded tensors
        for it (phase_prob [P], ...)."""
        decoded = self.model.decode(self.stepper.step(x))
        return {k: v[0, -1] for k, v in decoded.items()}  # [B=1, T=1, ...] -> [...]

    def step(self, frame: Any) -> dict[str, Any]:
        """Predict the current frame. Returns numpy arrays: phase_prob [P] (+ `phase` name and
        `phase_id`, `confidence`), tools_prob [K], anticipation_min [I] (minutes), for the tasks
        the model has, plus `frame` (index since reset)."""
        index = self.frame_index
        decoded = self.step_tensor(self.preprocess(frame))
        out: dict[str, Any] = {"frame": index}
        for key, value in decoded.items():
            out[key] = value.float().cpu().numpy()
        if "phase_prob" in out:
            pid = int(np.argmax(out["phase_prob"]))
            out["phase_id"] = pid
            out["phase"] = self.phase_names[pid] if pid < len(self.phase_names) else str(pid)
            out["confidence"] = float(out["phase_prob"][pid])
        return out
