"""Audit of the training input path (issue 9): the leaks a model audit on random tensors cannot see.

Given a config, the sampler, augmentation, precision and model are built by `surgflow train`'s own
builder (training/build.py: build_training, with random weights); batches come from
the strategy's own sampler, and outputs from the strategy's own training forward (uint8 -> float,
augmentation, autocast, model in train mode). Two perturbations of the RAW frames, before the
augmentation, each compared with the same random draws (augmentation generator and torch RNG):

  future   frames t+1.. of every lane replaced: outputs at frames <= t must not change;
  padding  the padding frames of a lane's last chunk replaced: its valid outputs must not change.

Each runs for several augmentation draws (random transforms switch on with some probability), and
once more with the augmentation off, so that a leak is attributed to the augmentation or to the
model path (which the model audit reports on its own). It lives in training/ because it must build
exactly what training builds; `surgflow audit CONFIG` reports its findings with the model's.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from surgflow.audit.audit import REL_TOL, Finding, max_change
from surgflow.io_utils import SurgflowError
from surgflow.training import build
from surgflow.training.runtime import setup_runtime
from surgflow.training.strategies import trim_padding

FIX_AUGMENT = ("share the random parameters over the clip but apply every operation frame by frame "
               "(surgflow's ClipAugment: contrast blends each frame towards its own mean grey); "
               "never compute a statistic over the time axis of a clip")
FIX_MODEL_PATH = ("see the model findings above: a BatchNorm in train mode or a non-causal head reads "
                  "ahead; for padding, offline heads must mask a lane's padding (valid)")


def build_training_path(cfg, augment: Union[str, Callable, None] = "config"):
    """The strategy of `surgflow train` for `cfg` (training/build.py: the trainer's own builder),
    with random weights. augment: "config" (the config's own: build_augment), None (off) or any
    callable like ClipAugment."""
    if not cfg.data.root or not (Path(cfg.data.root) / "manifest.json").is_file():
        raise SurgflowError(f"data.root: '{cfg.data.root}' is not a dataset written by `surgflow "
                            "prepare`; the input-path audit reads the training batches from it "
                            "(prepare one, or pass --set data.root=DIR)")
    # random weights: the leaks are structural
    parts = build.build_training(cfg, setup_runtime(cfg), augment=augment, load_pretrained=False)
    return parts.strategy


def _padded_step(sampler) -> Optional[int]:
    """A step of epoch 0 where a lane ends its video inside the chunk; preferably one where that
    padding survives trim_padding (another lane has more valid frames), as it then reaches the model."""
    T, first = sampler.seq_len, None
    for i, (entries, _) in enumerate(sampler.plan(0)):
        n = [min(T, sampler.lengths[v] - s) if v else 0 for v, s in entries]  # valid frames per lane
        if any(0 < k < T for k in n):
            if any(0 < k < max(n) for k in n):
                return i
            first = i if first is None else first
    return first


def _outputs(strategy, batch, gen_state, seed: int) -> dict:
    ctx = strategy.ctx
    if ctx.generator is not None:
        ctx.generator.set_state(gen_state)  # the same augmentation draws
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same dropout draws
        out, _ = strategy.forward(batch, None)
    return {k: v.detach().float() for k, v in out.items() if v.is_floating_point()}


def _worst(strategy, batch, perturbed, index, draws: int, seed: int) -> tuple[float, float]:
    """Largest (absolute, relative) change of the outputs at `index` (a slice tuple or a bool mask
    [B, T]) over `draws` augmentation draws, each shared by the two inputs."""
    worst = (0.0, 0.0)
    for d in range(draws):
        state = torch.Generator().manual_seed(seed + d).get_state()
        a = _outputs(strategy, batch, state, seed + d)
        b = _outputs(strategy, perturbed, state, seed + d)
        worst = max(worst, max_change(a, b, index), key=lambda r: r[1])
    return worst


def audit_input_path(cfg, augment: Union[str, Callable, None] = "config", draws: int = 8,
                     seed: int = 0) -> list[Finding]:
    """Findings for the training input path of `cfg`: kinds "input_future" and "input_padding"
    (measured), "input_path" (a note on what could not be measured here, never a leak)."""
    strategy = build_training_path(cfg, augment)
    name = cfg.train.strategy
    if name == "two_stage":
        return [Finding("input_path", "train", 0.0, 0.0, False,
                        "input path (two_stage): stage 1 trains on single frames and stage 2 on "
                        "features extracted by the eval loop, so no clip reaches the CNN")]
    sampler, dev = strategy.sampler, strategy.rt.device
    strategy.start_epoch(0)
    aug_on = strategy.ctx.augment is not None
    gen = torch.Generator().manual_seed(seed + 1000)
    findings = []

    # future: frames t+1.. of every lane replaced by other content (raw uint8, before augmentation)
    batch = trim_padding(next(iter(sampler.iter_epoch(0, 0)))).to(dev)
    T = batch.frames.shape[1]
    if T < 2:
        raise SurgflowError(f"train.seq_len: {T} frame(s) per chunk; the input-path audit needs >= 2")
    t = T // 2 - 1
    frames = batch.frames.clone()
    frames[:, t + 1:] = torch.randint(0, 256, frames[:, t + 1:].shape, generator=gen,
                                      dtype=torch.uint8).to(dev)
    fut = replace(batch, frames=frames)
    index = (slice(None), slice(0, t + 1))
    if strategy.model.is_causal:  # the head's own `causal` property
        findings.append(_finding("future", *_worst(strategy, batch, fut, index, draws, seed),
                                 strategy, batch, fut, index, seed, aug_on,
                                 f"frames 0..{t} when frames {t + 1}..{T - 1} change"))
    else:
        findings.append(Finding("input_path", "train", 0.0, 0.0, False,
                                "input path: future not tested: the temporal head is offline "
                                "(causal False) and reads the future by design (task.online: false)"))
    # padding: a lane's last chunk, its padding frames replaced (valid outputs must not move)
    step = _padded_step(sampler)
    if step is None:
        findings.append(Finding("input_path", "train", 0.0, 0.0, False,
                                "input path: no chunk of epoch 0 ends a video inside it (every video "
                                "length is a multiple of train.seq_len): padding not tested"))
    else:
        batch = trim_padding(next(iter(sampler.iter_epoch(0, step)))).to(dev)
        frames = batch.frames.clone()
        pad = ~batch.valid  # [B, T]
        if not bool((batch.valid.any(1, keepdim=True) & pad).any()):
            findings.append(Finding("input_path", "train", 0.0, 0.0, False,
                                    "input path: a lane's padding never reaches the model here "
                                    "(trim_padding drops it: one lane, or all lanes end together)"))
            return findings
        frames[pad] = torch.randint(0, 256, frames[pad].shape, generator=gen,
                                    dtype=torch.uint8).to(dev)
        noisy = replace(batch, frames=frames)
        keep = batch.valid & pad.any(1, keepdim=True)  # valid frames of lanes with padding [B, T]
        findings.append(_finding("padding", *_worst(strategy, batch, noisy, keep, draws, seed),
                                 strategy, batch, noisy, keep, seed, aug_on,
                                 "valid frames of a lane when its padding frames change"))
    return findings


def _finding(test: str, value: float, rel: float, strategy, batch, perturbed, index, seed: int,
             aug_on: bool, what: str) -> Finding:
    leak = rel > REL_TOL
    cfg = strategy.cfg
    where = (f"input path ({cfg.train.strategy}, {cfg.train.precision}, augmentation "
             f"{'on' if aug_on else 'off'}, train mode, same random draws)")
    if not leak:
        return Finding(f"input_{test}", "train", value, rel, False,
                       f"{where}: {what}: unchanged (max change {value:.2g})")
    culprit, fix = "the model path", FIX_MODEL_PATH
    if aug_on:  # the same test with the augmentation off tells whether it is the culprit
        aug, strategy.ctx.augment = strategy.ctx.augment, None
        try:
            _, rel_off = _worst(strategy, batch, perturbed, index, 1, seed)
        finally:
            strategy.ctx.augment = aug
        if rel_off <= REL_TOL:
            culprit, fix = f"the augmentation ({type(aug).__name__})", FIX_AUGMENT
    return Finding(f"input_{test}", "train", value, rel, True,
                   f"{where}: {what}: they change by {value:.3g} through {culprit}", fix,
                   "training sees information from later frames (or padding) that is not there at "
                   "test time: the model can learn to read the future, an online model's training "
                   "loss and validation overstate what it can do")
