"""Exact backpropagation through the temporal model over very long sequences, with the CNN's
activation memory bounded by a micro-batch.

Plain backprop over T frames keeps the CNN activations of all T frames. Here:
  (a) features [B, T, D] = CNN(frames), micro-batch by micro-batch, without a graph
  (b) features become a leaf; temporal head + losses run with autograd; backward gives the head's
      parameter gradients and dL/dfeatures [B, T, D]
  (c) the CNN is re-run micro-batch by micro-batch with a graph and each micro-batch's features are
      backpropagated with their stored dL/dfeatures, accumulating the CNN's parameter gradients
      (the last micro-batch keeps its graph from (a) and is not recomputed).
Peak memory ~ frames + T x D features + one micro-batch of CNN activations, instead of T x CNN.

Exactness needs step (c) to recompute the very function that produced the features in step (a):
per-frame computation. BatchNorm in train mode normalises with the statistics of the batch it sees
(a micro-batch), so it is refused. Dropout / stochastic depth are replayed with the RNG state
saved per micro-batch. Autocast and channels_last need nothing: run the call inside the caller's
autocast context; the model's backbone converts its inputs to channels_last itself.
"""
from __future__ import annotations

import contextlib

import torch

from surgflow.io_utils import SurgflowError
from surgflow.models.backbones import batch_stat_layers


def check_recomputable(model) -> None:
    """Refuse a backbone whose output for a frame depends on the other frames of its batch."""
    backbone = model.backbone
    coupled = batch_stat_layers(backbone)  # in the current train/eval mode of each layer
    if coupled:
        raise SurgflowError(
            f"train.strategy full_context: backbone '{getattr(backbone, 'name', '?')}' has "
            f"{len(coupled)} BatchNorm layers using batch statistics in train mode (e.g. "
            f"{coupled[0]}). full_context recomputes the CNN micro-batch by micro-batch, and each "
            "micro-batch has its own statistics, so the recomputed graph is not the one that "
            "produced the features and the gradients would be wrong. Use model.norm: frozen_bn or "
            "gn, or a BN-free backbone (convnext_*, resnet50_gn, nf_resnet50, nfnet_l0)")


class _RNGReplay:
    """Saves the RNG state before each micro-batch so its recomputation draws the same dropout."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.states: list = []

    def save(self):
        cuda_state = torch.cuda.get_rng_state(self.device) if self.cuda else None
        self.states.append((torch.get_rng_state(), cuda_state))

    @contextlib.contextmanager
    def replay(self, i: int):
        devices = [self.device] if self.cuda else []
        with torch.random.fork_rng(devices=devices, enabled=True):
            cpu_state, cuda_state = self.states[i]
            torch.set_rng_state(cpu_state)
            if self.cuda:
                torch.cuda.set_rng_state(cuda_state, self.device)
            yield


def full_context_step(model, frames: torch.Tensor, batch, micro_batch: int, state=None,
                      loss_fn=None):
    """One forward/backward over a whole [B, T] batch; the caller steps the optimiser.

    model: a SurgflowModel (not DDP-wrapped: all-reduce the gradients after this call).
    frames: uint8 or float in [0, 1], [B, T, 3, H, W] (uint8 keeps the long sequence 4x smaller;
            it is converted per micro-batch). batch: Batch with phase/tools/anticipation/valid/new_video.
    loss_fn: (outputs, batch) -> (loss to backpropagate, logs); default model.loss (the trainer
            passes its rank-weighted loss under DDP).
    -> (loss_value float, logs {name: float}, new_state detached)
    """
    if micro_batch <= 0:
        raise SurgflowError(f"train.micro_batch: must be > 0, got {micro_batch}")
    check_recomputable(model)
    B, T = frames.shape[:2]
    flat = frames.reshape(B * T, 1, *frames.shape[2:])  # [N, 1, 3, H, W]: N frames as a batch
    spans = [(i, min(i + micro_batch, B * T)) for i in range(0, B * T, micro_batch)]
    rng = _RNGReplay(frames.device)
    new_video = getattr(batch, "new_video", None)

    # (a) CNN without a graph, micro-batch by micro-batch; the last micro-batch keeps its graph,
    #     which spares its recomputation in (c) (memory: still one micro-batch of activations)
    feats, last = [], None
    backbone_trains = any(p.requires_grad for p in model.backbone.parameters())
    for i, (a, b) in enumerate(spans):
        if i == len(spans) - 1 and backbone_trains:
            # autocast caches its weight casts; torch < 2.11 keeps casts made under no_grad and
            # reuses them here, which cuts the backbone out of the graph (no gradients at all)
            torch.clear_autocast_cache()
            last = model.features(flat[a:b])  # [m, 1, D] with graph
            feats.append(last.detach())
        else:
            rng.save()
            with torch.no_grad():
                feats.append(model.features(flat[a:b]))  # [m, 1, D]
    feats = torch.cat(feats).view(B, T, -1).detach().requires_grad_(True)  # [B, T, D] leaf

    # (b) temporal head + losses with autograd; gradients w.r.t. the features
    outputs, new_state = model.temporal(feats, state, new_video, getattr(batch, "valid", None))
    total, logs = loss_fn(outputs, batch) if loss_fn is not None else model.loss(outputs, batch)
    total.backward()
    grad = feats.grad.reshape(B * T, 1, -1)  # [N, 1, D]

    # (c) push the stored gradients through the CNN: the kept last micro-batch first (frees its
    #     graph), then the others recomputed with a graph, one at a time
    if backbone_trains:
        a, b = spans[-1]
        last.backward(grad[a:b].to(last.dtype))
        torch.clear_autocast_cache()  # as in (a): no cast made without a graph may be reused
        for i, (a, b) in enumerate(spans[:-1]):
            with torch.enable_grad(), rng.replay(i):
                f = model.features(flat[a:b])  # [m, 1, D]
            f.backward(grad[a:b].to(f.dtype))

    logs = {k: float(v) for k, v in logs.items()}
    return float(total.detach()), logs, model.detach_state(new_state)
