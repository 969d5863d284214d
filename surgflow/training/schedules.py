"""Learning-rate schedules, stepped once per optimiser step (not per epoch).

Each schedule is a pure function `(step, total_steps, cfg.train) -> factor` of the base lr, wrapped
in torch's LambdaLR: its state dict (step count, base lrs) is primitives only, goes into the
checkpoint and resumes exactly. A linear warmup over `train.warmup_steps` precedes every schedule:

    constant  factor 1
    cosine    half cosine from 1 to train.lr_min / train.lr over the steps after warmup
    step      multiplied by train.lr_gamma every train.lr_step_every steps after warmup
"""
from __future__ import annotations

import math
from functools import partial

import torch

from surgflow.registry import LR_SCHEDULES  # entries: factor functions (step, total, cfg.train)


@LR_SCHEDULES.register("constant")
def constant(step: int, total: int, t) -> float:
    return 1.0


@LR_SCHEDULES.register("cosine")
def cosine(step: int, total: int, t) -> float:
    span = max(total - t.warmup_steps, 1)
    p = min(max(step - t.warmup_steps, 0) / span, 1.0)
    floor = t.lr_min / t.lr if t.lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


@LR_SCHEDULES.register("step")
def step_decay(step: int, total: int, t) -> float:
    every = max(t.lr_step_every, 1)
    return t.lr_gamma ** (max(step - t.warmup_steps, 0) // every)


def lr_factor(step: int, total: int, t) -> float:
    """Factor of train.lr at optimiser step `step` (0-based) of `total`: warmup, then the schedule."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps  # linear, never 0 (the first step already learns)
    return LR_SCHEDULES.get(t.lr_schedule)(step, total, t)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, train_cfg):
    """LambdaLR over `total_steps` optimiser steps; call .step() after every optimizer.step()."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, total=int(total_steps), t=train_cfg))
