"""Train-step throughput: surgflow's full training step vs the bare backbone forward+backward.

surgflow step = what the trainer does per optimiser step: batch to device, uint8 -> float,
normalisation, backbone, temporal head, task loss, backward, gradient clipping, optimiser step.
bare = timm backbone forward + backward (sum of features) on the same B*T frames, nothing else.
Both are timed alternately in one process (the machine's load hits both alike); the ratio
surgflow/bare is the overhead figure (target >= 0.9, issue 9). No dataset and no network needed:
frames are random tensors served through an in-memory dataset with the prepared-dataset interface.

    python benchmarks/bench_train_step.py                       # CPU, 112x64 (WxH), convnext_atto
    python benchmarks/bench_train_step.py --device cuda --size 384x216 --backbone convnext_tiny \
        --seq-len 64 --precision bf16 --channels-last
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from surgflow.cli_args import size_type  # noqa: E402
from surgflow.labels import CHOLEC80_PHASES, CHOLEC80_TOOLS  # noqa: E402


class MemoryDataset:
    """Random uint8 frames + labels behind the PreparedDataset interface (docs/ARCHITECTURE.md)."""

    def __init__(self, videos: int, frames: int, size: tuple[int, int], seed: int = 0):
        rng = np.random.default_rng(seed)
        self.size, self.fps = size, 1.0
        self.videos = [f"video{i + 1:02d}" for i in range(videos)]
        self.phase_names, self.tool_names = list(CHOLEC80_PHASES), list(CHOLEC80_TOOLS)
        H, W = size
        # one shared frame bank keeps memory small for long videos
        self._bank = rng.integers(0, 256, size=(min(frames, 256), H, W, 3), dtype=np.uint8)
        self._n = frames
        self._phase = {v: np.sort(rng.integers(0, 7, size=frames)).astype(np.int64) for v in self.videos}

    def num_frames(self, v):
        return self._n

    def read_frames(self, v, start, stop):
        idx = np.arange(start, stop) % len(self._bank)
        return self._bank[idx]

    def phase(self, v):
        return self._phase[v]

    def tools(self, v):
        return np.zeros((self._n, len(self.tool_names)), np.float32)

    def anticipation(self, v, horizon, instruments):
        return np.full((self._n, len(instruments)), horizon, np.float32)

    def phase_counts(self):
        return np.bincount(np.concatenate(list(self._phase.values())), minlength=7)


def make_setup(backbone: str, size, seq_len: int, batch: int, device: str, precision: str = "fp32",
               channels_last: bool = False, compile: bool = False, strategy: str = "carry_hidden",
               micro_batch: int = 16, video_frames: int | None = None, hidden: int = 512,
               dataset=None, augment: bool = False):
    """(cfg, runtime, model, strategy, optimizer) on synthetic in-memory videos, or on `dataset`
    (a PreparedDataset: the store -> sampler path) with the training augmentation if `augment`."""
    from surgflow.config import load_config
    from surgflow.models.model import build_model
    from surgflow.training.runtime import (Runtime, make_optimizer, param_groups, select_device,
                                          seed_everything)
    from surgflow.training.strategies import TrainContext, build_strategy

    cfg = load_config(None, [
        f"model.backbone={backbone}", "model.pretrained=false", f"model.hidden={hidden}",
        f"train.seq_len={seq_len}", f"train.batch_size={batch}", f"train.precision={precision}",
        f"train.channels_last={str(channels_last).lower()}", f"train.compile={str(compile).lower()}",
        f"train.strategy={strategy}", f"train.micro_batch={micro_batch}", "train.epochs=2",
        "train.two_stage_cnn_epochs=1", "train.lr_schedule=cosine", "train.warmup_steps=10",
        "train.wd_exclude_norm_bias=true"])
    seed_everything(0)
    rt = Runtime(device=select_device(device), precision=precision, compile=compile)
    ds = dataset or MemoryDataset(videos=max(batch, 1), frames=video_frames or seq_len * 2, size=size)
    model = rt.prepare_model(build_model(cfg, 7, 7, 0, phase_counts=ds.phase_counts(), size=size))
    model.train()
    aug = None
    if augment:
        from surgflow.data.augment import ClipAugment

        aug = ClipAugment()  # what build_augment gives with data.augment: true
    ctx = TrainContext(cfg=cfg, rt=rt, model=model, train_ds=ds, instruments=[], augment=aug,
                       generator=torch.Generator().manual_seed(17), log=lambda m: None)
    strat = build_strategy(ctx)
    opt = make_optimizer(param_groups(model, cfg.train), cfg.train)  # as the trainer: wd groups
    return cfg, rt, model, strat, opt


def surgflow_step(rt, model, strat, opt, batch, sched=None) -> None:
    from surgflow.training.runtime import clip_gradients
    from surgflow.training.strategies import valid_frames

    opt.zero_grad(set_to_none=True)
    strat.loss_weight = rt.frame_weight(valid_frames(batch))  # 1 in one process, as the trainer
    strat.train_step(batch)
    clip_gradients(model.parameters(), 0.0, 0.0)  # the trainer computes (and logs) the norm every step
    opt.step()
    if sched is not None:
        sched.step()  # per-step lr schedule


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", default=(64, 112), type=size_type(),
                   help="WIDTHxHEIGHT, as every surgflow command (default 112x64)")
    p.add_argument("--backbone", default="convnext_atto")
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    H, W = args.size  # (H, W) inside the code
    import timm

    cfg, rt, model, strat, opt = make_setup(args.backbone, (H, W), args.seq_len, args.batch,
                                            args.device, args.precision, args.channels_last)
    from surgflow.training.schedules import make_scheduler

    sched = make_scheduler(opt, 10_000, cfg.train)
    batches = list(strat.batches(0, 0))
    frames_per_step = args.batch * args.seq_len

    bare = timm.create_model(args.backbone, pretrained=False, num_classes=0).to(rt.device).train()
    if args.channels_last:
        bare = bare.to(memory_format=torch.channels_last)
    x = torch.rand(frames_per_step, 3, H, W, device=rt.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def bare_step():
        bare.zero_grad(set_to_none=True)
        with rt.autocast():
            f = bare(x)
        f.float().sum().backward()

    def ours_step(i):
        surgflow_step(rt, model, strat, opt, batches[i % len(batches)], sched)

    for i in range(2):  # warm-up (allocator, kernels)
        bare_step()
        ours_step(i)
    sync(args.device)
    t_bare, t_ours = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            bare_step()
        sync(args.device)
        t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(args.steps):
            ours_step(i)
        sync(args.device)
        t_ours.append(time.perf_counter() - t0)
    fps_bare = frames_per_step * args.steps / statistics.median(t_bare)
    fps_ours = frames_per_step * args.steps / statistics.median(t_ours)
    print(f"# train step vs bare backbone fwd+bwd: {args.backbone} {W}x{H} (WxH), B={args.batch} "
          f"T={args.seq_len}, {args.precision}{', channels_last' if args.channels_last else ''}, "
          f"device {rt.device}, torch threads {torch.get_num_threads()}")
    print("| loop | frames/s |")
    print("|---|---|")
    print(f"| bare backbone forward+backward | {fps_bare:.1f} |")
    print(f"| surgflow train step (carry_hidden, LSTM, loss, AdamW) | {fps_ours:.1f} |")
    print(f"| ratio surgflow / bare (target >= 0.9) | {fps_ours / fps_bare:.3f} |")


if __name__ == "__main__":
    main()
