"""Training strategies: how batches are drawn and how one step computes its gradients.

    carry_hidden  B lanes stream whole videos in chunks of T; the state is detached and carried
                  between chunks and reset per lane at video starts (the paper's default, B >= 1)
    clips         B random clips of T frames; state reset every batch ("shuffle")
    two_stage     stage 1: frame-wise CNN + linear classifiers on single frames; stage 2: CNN frozen,
                  features of whole videos extracted once, temporal head + task layers trained on
                  whole-video feature sequences (the field's usual pipeline, kept as a baseline)
    full_context  lanes of up to T frames (T >= video length: whole videos) with exact
                  backpropagation through the temporal head; the CNN is recomputed micro-batch by
                  micro-batch (training/full_context.py), so CNN memory is bounded by micro_batch

A strategy yields batches with `batches(epoch, start_step)` (resume without reading skipped
frames), computes loss and gradients with `train_step(batch)` (no optimiser step), and exposes the
state to carry across a checkpoint with `state_dict()` / `load_state_dict()`. The trainer does the
optimiser step, clipping, NaN checks and checkpoints.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from surgflow.data.samplers import ClipSampler, LanesSampler
from surgflow.io_utils import SurgflowError, progress
from surgflow.models.backbones import batch_stat_layers
from surgflow.models.video_loop import run_video
from surgflow.registry import STRATEGIES  # entries: strategy classes, built with (ctx)
from surgflow.training.checkpoint import carried_to_cpu, carried_to_device
from surgflow.training.full_context import check_recomputable, full_context_step

@dataclass
class StepResult:
    loss: float  # total loss of the step (a NaN/inf here stops the run)
    logs: dict  # per-task losses (floats)
    frames: int  # valid frames processed (for frames/s)


@dataclass
class TrainContext:
    """What every strategy needs; built by the trainer."""
    cfg: Any  # surgflow.config.Config
    rt: Any  # surgflow.training.runtime.Runtime
    model: nn.Module  # the raw SurgflowModel on rt.device
    train_ds: Any  # PreparedDataset of the training subset
    instruments: list = field(default_factory=list)  # anticipation instruments ([] without tools)
    augment: Optional[Callable] = None  # ClipAugment or None
    generator: Optional[torch.Generator] = None  # CPU generator of the augmentation
    log: Callable[[str], None] = print


def trim_padding(batch):
    """Drop trailing time steps that are padding in every lane (whole videos shorter than T)."""
    cols = batch.valid.any(0)  # [T]
    if bool(cols.all()) or not bool(cols.any()):
        return batch
    n = int(torch.nonzero(cols).max()) + 1

    values = {}
    for f in fields(batch):
        v = getattr(batch, f.name)
        if isinstance(v, torch.Tensor) and v.dim() >= 2 and f.name != "starts":
            values[f.name] = v[:, :n]
    return replace(batch, **values)


def valid_frames(batch) -> int:
    """Valid (not padding, not idle-lane) frames of a batch; a FeatureBatch holds them in labels."""
    return int(getattr(batch, "labels", batch).valid.sum())


def loss_denominator(task, batch) -> float:
    """What `task`'s loss on `batch` is a mean over (Task.loss_denominator, models/tasks.py): for a
    class-weighted cross-entropy (phase) the class weights of its labelled valid frames, else the
    valid frames. A FeatureBatch holds them in labels."""
    return task.loss_denominator(getattr(batch, "labels", batch))


def rank_weighted_loss(model, outputs: dict, batch, rt):
    """(loss to backpropagate, logs) of `model` on this rank's batch. In one process the model's
    loss. Under DDP each task's loss times this rank's share of the task's denominator
    (Runtime.loss_weights): averaged over the ranks (DDP, or all_reduce_gradients), the gradient
    is that of one process's loss over all ranks' frames, also with class-weighted phases and
    ranks with idle lanes. logs hold this rank's unweighted losses, as model.loss's."""
    if not rt.distributed:
        return model.loss(outputs, batch)
    parts = {name: task.loss(outputs, batch) for name, task in model.tasks.items()}
    weights = rt.loss_weights({name: loss_denominator(task, batch)
                               for name, task in model.tasks.items()})
    total = sum(parts[name][name] * weights[name] for name in parts)
    logs = {k: v.detach() for p in parts.values() for k, v in p.items()}
    logs["loss"] = sum(parts[name][name] for name in parts).detach()
    return total, logs


def _to_float(logs: dict) -> dict:
    return {k: float(v) for k, v in logs.items()}


@contextlib.contextmanager
def _batch_stats_frozen(layers: list, frozen: bool):
    """BatchNorm layers in eval mode inside the block when `frozen`: a batch without one valid
    frame (a rank's idle step) must not move their running statistics."""
    if not frozen or not layers:
        yield
        return
    was = [m.training for m in layers]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(layers, was):
            m.train(w)


class Strategy:
    name = ""
    # True: a batch holds T consecutive frames of one video through the CNN (BatchNorm couples
    # them; audit/guards.py warns). Every registered strategy declares it.
    consecutive_frames: bool
    uses_ddp_forward = True  # False: the trainer all-reduces gradients itself

    def __init__(self, ctx: TrainContext):
        self.ctx, self.cfg, self.rt, self.model = ctx, ctx.cfg, ctx.rt, ctx.model
        self.fwd = self.rt.wrap(self.model) if self.uses_ddp_forward else self.model
        self.state = None  # carried temporal state
        self.loss_weight = 1.0  # a factor on the loss before backward (1: rank_weighted_loss weights)

        # norm layers that pool statistics over the batch in training (model.norm native + BN)
        bb = self.model.backbone
        self.batch_stat_norms = [bb.get_submodule(n) for n in batch_stat_layers(bb)]

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the loss times this rank's weight (DDP averages the gradients over ranks)."""
        (loss * self.loss_weight if self.loss_weight != 1.0 else loss).backward()

    # -- data --
    def steps_per_epoch(self, epoch: int) -> int:
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator:
        self.sampler.set_epoch(epoch)
        return self.sampler.iter_epoch(epoch, start_step)

    def start_epoch(self, epoch: int) -> None:
        self.state = None

    # -- compute --
    def inputs(self, batch) -> torch.Tensor:
        x = self.rt.frames_to_input(batch.frames)  # float [B, T, 3, H, W] in [0, 1]
        aug = self.ctx.augment
        if aug is not None and getattr(aug, "per_video", False):  # keeps parameters per lane video
            x = aug(x, generator=self.ctx.generator, new_video=batch.new_video,
                    starts=getattr(batch, "starts", None))
        elif aug is not None:
            x = aug(x, generator=self.ctx.generator)
        return x

    def forward(self, batch, state=None):
        """The training forward of a (trimmed, on-device) batch: input path (uint8 -> float,
        augmentation) + model under the run's precision -> (outputs, state). The input-path audit
        measures leaks through exactly this."""
        x = self.inputs(batch)
        with self.rt.autocast():
            return self.fwd(x, state=state, new_video=batch.new_video, valid=batch.valid)

    def train_step(self, batch) -> StepResult:
        raise NotImplementedError

    def loss(self, outputs: dict, batch):
        """(loss to backpropagate, logs): rank_weighted_loss (the model's loss in one process)."""
        return rank_weighted_loss(self.model, outputs, batch, self.rt)

    def idle_norms(self, batch):
        """Context for the forward of `batch` (on the CPU, before the transfer): BatchNorm
        statistics untouched when no frame of it is valid (an idle step of a rank under DDP)."""
        return _batch_stats_frozen(self.batch_stat_norms, not bool(batch.valid.any()))

    def refuse_padded_batch_stats(self, why: str) -> None:
        """Lanes or clips whose padding would enter BatchNorm's batch statistics are refused."""
        if not self.batch_stat_norms:
            return
        raise SurgflowError(
            f"train.batch_size={self.cfg.train.batch_size} with BatchNorm using batch statistics "
            f"(backbone '{self.cfg.model.backbone}', model.norm {self.cfg.model.norm}: "
            f"{len(self.batch_stat_norms)} BatchNorm layers in train mode): {why}, so padding "
            f"frames would enter the statistics that normalise the real frames. Use model.norm: "
            f"frozen_bn or gn (or a BN-free backbone), or train.batch_size=1")

    def extra_module(self) -> Optional[nn.Module]:
        """Strategy-owned trainable module (optimised and checkpointed with the model)."""
        return None

    # -- checkpoint --
    def state_dict(self) -> dict:
        return {"carry": carried_to_cpu(self.state)}

    def load_state_dict(self, d: dict) -> None:
        self.state = carried_to_device(d.get("carry"), self.rt.device)

    def sampler_kwargs(self) -> dict:
        c = self.cfg
        return dict(seed=c.train.seed, rank=self.rt.rank, world_size=self.rt.world_size,
                    horizon=c.task.horizon, instruments=self.ctx.instruments, workers=c.data.workers,
                    pin_memory=self.rt.device.type == "cuda")

    def _lengths(self) -> list[int]:
        ds = self.ctx.train_ds
        return [int(ds.num_frames(v)) for v in ds.videos]


@STRATEGIES.register("carry_hidden")
class CarryHidden(Strategy):
    name = "carry_hidden"
    consecutive_frames = True

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)

        B, W = self.cfg.train.batch_size, self.rt.world_size
        n = len(ctx.train_ds.videos)
        if B * W > n:
            raise SurgflowError(
                f"train.batch_size: {B} lanes x {W} process(es) = {B * W} lanes but the training "
                f"subset has only {n} videos; every lane streams whole videos, so use "
                f"train.batch_size <= {max(n // W, 1)}")
        if B > 1:
            self.refuse_padded_batch_stats(f"{B} lanes end their videos at different steps (a "
                                           f"lane's last chunk is padded, a finished lane idles)")
        self.sampler = LanesSampler(ctx.train_ds, lanes=B, seq_len=self.cfg.train.seq_len,
                                    **self.sampler_kwargs())

    def train_step(self, batch) -> StepResult:
        batch = trim_padding(batch)
        with self.idle_norms(batch):
            batch = batch.to(self.rt.device, non_blocking=True)
            outputs, state = self.forward(batch, self.state)
        loss, logs = self.loss(outputs, batch)
        self.backward(loss)
        self.state = self.model.detach_state(state)  # truncated BPTT: carry values, not graphs
        return StepResult(float(logs["loss"]), _to_float(logs), int(batch.valid.sum()))


@STRATEGIES.register("clips")
class Clips(Strategy):
    name = "clips"
    consecutive_frames = True

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)

        T, longest = self.cfg.train.seq_len, max(self._lengths() or [0])
        if T > longest:
            raise SurgflowError(f"train.seq_len: clips of T={T} frames do not fit; the longest "
                                f"training video has {longest} frames. Use train.seq_len <= {longest}")
        shortest = min(self._lengths() or [T])
        if self.cfg.train.batch_size > 1 and shortest < T:
            self.refuse_padded_batch_stats(f"a clip of a video shorter than T={T} frames (the "
                                           f"shortest training video has {shortest}) is padded")
        self.sampler = ClipSampler(ctx.train_ds, batch_size=self.cfg.train.batch_size, seq_len=T,
                                   **self.sampler_kwargs())

    def train_step(self, batch) -> StepResult:
        batch = trim_padding(batch)
        with self.idle_norms(batch):
            batch = batch.to(self.rt.device, non_blocking=True)
            outputs, _ = self.forward(batch, None)  # fresh state
        loss, logs = self.loss(outputs, batch)
        self.backward(loss)
        return StepResult(float(logs["loss"]), _to_float(logs), int(batch.valid.sum()))

    def state_dict(self) -> dict:
        return {"carry": None}


@STRATEGIES.register("full_context")
class FullContext(Strategy):
    name = "full_context"
    consecutive_frames = True
    uses_ddp_forward = False  # full_context_step drives features/temporal itself

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)

        self.model.train()
        check_recomputable(self.model)  # refuse BatchNorm in train mode, with the reason
        B, W, T = self.cfg.train.batch_size, self.rt.world_size, self.cfg.train.seq_len
        lengths = self._lengths()
        if B * W > len(lengths):
            raise SurgflowError(f"train.batch_size: {B * W} lanes but only {len(lengths)} training "
                                f"videos; use train.batch_size <= {max(len(lengths) // W, 1)}")
        if lengths and T >= max(lengths):
            ctx.log(f"full_context: T={T} >= longest training video ({max(lengths)} frames): every "
                    f"step sees whole videos (padding trimmed)")
        self.sampler = LanesSampler(ctx.train_ds, lanes=B, seq_len=T, **self.sampler_kwargs())
        self._step = full_context_step

    def train_step(self, batch) -> StepResult:
        batch = trim_padding(batch).to(self.rt.device, non_blocking=True)
        x = self.inputs(batch)
        with self.rt.autocast():
            _, logs, state = self._step(self.model, x, batch, self.cfg.train.micro_batch,
                                        self.state, loss_fn=self.loss)
        self.state = self.model.detach_state(state)
        return StepResult(float(logs["loss"]), _to_float(logs), int(batch.valid.sum()))


class FrameClassifier(nn.Module):
    """Stage 1 of two_stage: each task's own layers and forward on single-frame CNN features, with
    fresh linear layers of input D in place of its linear layers (same output keys as the model's
    task layers, so the model's own losses and phase weights apply)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        D = model.feature_dim
        self.layers = nn.ModuleDict()
        for name, task in model.tasks.items():
            for key, lin in task.named_children():  # fc / reg / cls linear layers of the task
                if isinstance(lin, nn.Linear):
                    self.layers[f"{name}__{key}"] = nn.Linear(D, lin.out_features)
        self._tasks = dict(model.tasks)  # not submodules: the model owns them (not in this state_dict)

    def forward(self, f: torch.Tensor) -> dict:  # f [B, T, D]
        out = {}
        for name, task in self._tasks.items():
            weights = {f"{key}.{p}": getattr(lin, p) for k, lin in self.layers.items()
                       for task_name, key in [k.split("__")] if task_name == name
                       for p in ("weight", "bias")}
            out.update(torch.func.functional_call(task, weights, (f,), strict=False))
        return out


@dataclass
class FeatureBatch:
    """Stage 2 of two_stage: one whole video as cached features + its labels (B = 1)."""
    feats: torch.Tensor  # float [1, N, D]
    labels: Any  # a samplers.Batch with empty frames, holding phase/tools/anticipation/valid
    videos: list


@STRATEGIES.register("two_stage")
class TwoStage(Strategy):
    name = "two_stage"
    consecutive_frames = False
    uses_ddp_forward = False

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)

        c = self.cfg.train
        self.cnn_epochs = int(c.two_stage_cnn_epochs)
        if self.cnn_epochs >= c.epochs:
            raise SurgflowError(f"train.two_stage_cnn_epochs={self.cnn_epochs} leaves no epoch for "
                                f"stage 2 (train.epochs={c.epochs}); use fewer CNN epochs")
        # stage 1: as many single frames per step as the other strategies use (B x T)
        self.frames_per_step = c.batch_size * c.seq_len
        self.sampler = ClipSampler(ctx.train_ds, batch_size=self.frames_per_step, seq_len=1,
                                   **self.sampler_kwargs())
        self.classifier = FrameClassifier(self.model).to(self.rt.device)
        self.features_cache: dict[str, tuple] = {}
        self.videos = list(ctx.train_ds.videos)

    def extra_module(self) -> nn.Module:
        return self.classifier

    def stage(self, epoch: int) -> int:
        return 1 if epoch < self.cnn_epochs else 2

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        if self.stage(epoch) == 2:
            self.model.backbone.requires_grad_(False)  # stage 2: CNN frozen

    def steps_per_epoch(self, epoch: int) -> int:
        if self.stage(epoch) == 1:
            return super().steps_per_epoch(epoch)
        return -(-len(self.videos) // self.rt.world_size)

    def _video_order(self, epoch: int) -> list[str]:
        rng = np.random.default_rng([self.cfg.train.seed, epoch])
        order = [self.videos[i] for i in rng.permutation(len(self.videos))]
        steps, W = self.steps_per_epoch(epoch), self.rt.world_size
        order = (order * (W + 1))[: steps * W]  # equal steps on every rank (wrap around)
        return order[self.rt.rank::W]

    def batches(self, epoch: int, start_step: int = 0) -> Iterator:
        if self.stage(epoch) == 1:
            return super().batches(epoch, start_step)
        self._extract_features()
        return (self._feature_batch(v) for v in self._video_order(epoch)[start_step:])

    @torch.no_grad()
    def _extract_features(self) -> None:
        """Features of every training video, once, by the eval protocol (models/video_loop.py:
        eval mode, fp32, no augmentation): the features the temporal head will see at test time."""
        if self.features_cache:
            return

        was = self.model.training
        self.model.eval()
        chunk = max(self.frames_per_step, 16)
        for v in progress(self.videos, desc="two_stage: extracting features", leave=False):
            run = run_video(self.model, self.ctx.train_ds, v, chunk, self.cfg.task.horizon,
                            self.ctx.instruments, self.rt.device, features_only=True)
            self.features_cache[v] = (run.features.float().cpu(), run.labels)  # [1, N, D]
        self.model.train(was)

    def _feature_batch(self, video: str) -> FeatureBatch:
        feats, labels = self.features_cache[video]
        return FeatureBatch(feats, labels, [video])

    def train_step(self, batch) -> StepResult:
        if isinstance(batch, FeatureBatch):  # stage 2: temporal head + task layers on a whole video
            labels = batch.labels.to(self.rt.device)
            with self.rt.autocast():
                outputs, _ = self.model.temporal(batch.feats.to(self.rt.device), None,
                                                 labels.new_video, labels.valid)
            loss, logs = self.loss(outputs, labels)
            loss.backward()
            return StepResult(float(logs["loss"]), _to_float(logs), int(labels.valid.sum()))
        with self.idle_norms(batch):  # stage 1: single frames [B*T, 1, ...]
            batch = batch.to(self.rt.device, non_blocking=True)
            x = self.inputs(batch)
            with self.rt.autocast():
                outputs = self.classifier(self.model.features(x))  # [N, 1, ...]
        loss, logs = self.loss(outputs, batch)
        loss.backward()
        return StepResult(float(logs["loss"]), _to_float(logs), int(batch.valid.sum()))

    def state_dict(self) -> dict:
        return {"carry": None, "classifier": self.classifier.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        if d.get("classifier") is not None:
            self.classifier.load_state_dict(d["classifier"])


def build_strategy(ctx: TrainContext) -> Strategy:
    return STRATEGIES.build(ctx.cfg.train.strategy, ctx)
