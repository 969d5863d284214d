"""The one whole-video loop: a model over a video in order, chunk by chunk, state carried.

Trainer validation, `surgflow eval`, two_stage feature extraction and the online predictor all run
through here, so they cannot drift apart. The protocol (the paper's evaluation):
  - frames in order, in chunks; the temporal state is carried across chunks and reset at the video
    start, so a causal head's output at t sees frames <= t only, whatever the chunk length;
  - an offline head (`head.causal` False: bilstm, tcn_centered) gets the features of the WHOLE video
    in one temporal call, as it would see at test time (chunks would cut its context);
  - no autocast: fp32 as `surgflow eval` (the caller chooses train/eval mode; eval protocol = eval);
  - uint8 frames travel to the device as uint8 and `SurgflowModel.features` turns them into floats
    (the only uint8 -> float conversion outside the training input path).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from surgflow.data.samplers import iter_video_chunks


class ChunkStepper:
    """One lane of causal inference: `step(frames [1, T, 3, H, W])` -> raw outputs of those T frames
    (dict of [1, T, ...]), the temporal state carried from the previous step; `reset()` starts a
    new video. T = 1 is the online predictor, T = chunk the whole-video loop."""

    def __init__(self, model, device="cpu"):
        self.model, self.device = model, torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.state = None  # the model's zeros: the video start
        self.frames_seen = 0

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 1]) [1, T, 3, H, W] -> features [1, T, D] on the device."""
        return self.model.features(frames.to(self.device, non_blocking=True))

    def temporal(self, feats: torch.Tensor) -> dict:
        new_video = torch.tensor([self.frames_seen == 0], device=self.device)
        outputs, self.state = self.model.temporal(feats, self.state, new_video)
        self.frames_seen += int(feats.shape[1])
        return outputs

    def step(self, frames: torch.Tensor) -> dict:
        return self.temporal(self.features(frames))


@dataclass
class VideoRun:
    """One video through the model: everything at the frame rate of the dataset, N frames."""
    outputs: dict  # raw model outputs {name: [1, N, ...]} on the device ({} if features_only)
    labels: object  # samplers.Batch of the whole video (frames empty: [1, N, 0, 0, 0])
    features: Optional[torch.Tensor] = None  # [1, N, D] (keep_features / features_only)


def default_chunk(cfg) -> int:
    """Chunk length of eval and validation: the training sequence length (64 if unset); it only
    bounds memory, a causal head's outputs do not depend on it."""
    return int(getattr(getattr(cfg, "train", None), "seq_len", 64) or 64)


def _cat(chunks: list, key: str) -> torch.Tensor:
    return torch.cat([getattr(b, key) for b in chunks], 1)


@torch.no_grad()
def run_video(model, dataset, video: str, chunk: int, horizon: float = 3.0,
              instruments: Sequence[str] = (), device="cpu", keep_features: bool = False,
              features_only: bool = False) -> VideoRun:
    """Run `model` (a SurgflowModel, in the mode the caller set) over `video` of `dataset`."""
    causal = bool(getattr(model, "is_causal", True))
    stepper = ChunkStepper(model, device)
    feats, parts, labels = [], [], []
    for batch in iter_video_chunks(dataset, video, chunk, horizon, list(instruments)):
        f = stepper.features(batch.frames)  # [1, T, D]
        if keep_features or features_only or not causal:
            feats.append(f)
        if causal and not features_only:
            parts.append(stepper.temporal(f))
        labels.append(batch)
    if not labels:
        raise ValueError(f"{video}: no frames")
    features = torch.cat(feats, 1) if feats else None
    outputs: dict = {}
    if not features_only:
        if causal:
            outputs = {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}
        else:  # offline head: the whole video in one temporal call
            outputs = stepper.temporal(features)
    whole = replace(labels[0], frames=torch.zeros(1, sum(b.valid.shape[1] for b in labels), 0, 0, 0,
                                                  dtype=torch.uint8),
                    phase=_cat(labels, "phase"), tools=_cat(labels, "tools"),
                    anticipation=_cat(labels, "anticipation"), valid=_cat(labels, "valid"),
                    new_video=torch.ones(1, dtype=torch.bool))
    return VideoRun(outputs, whole, features if (keep_features or features_only) else None)
