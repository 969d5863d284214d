"""Train-step throughput: surgflow's full training step vs the bare backbone forward+backward.

surgflow step = what the trainer does per optimiser step: batch to device, uint8 -> float,
normalisation, backbone, temporal head, task loss, backward, gradient clipping, optimiser step.
bare = timm backbone forward + backward (sum of features) on the same B*T frames, nothing else.
Both are timed in one process, in paired blocks whose order alternates (the machine's load hits
both loops of a pair alike); the ratio surgflow/bare of each pair is the overhead figure, reported
as the median with its range over the pairs (target >= 0.9, issue 9). One row per T: by default
the trainer's train.seq_len (64) and 16, where the per-step costs (LSTM at B=1, AdamW, gradient
norm) are shared by 4x fewer frames. No dataset and no network needed: frames are random tensors
served through an in-memory dataset with the prepared-dataset interface.

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


def time_pair(bare_step, ours_step, reps: int, steps: int, device) -> tuple[list, list]:
    """Seconds per block of `steps` steps, bare and surgflow, in `reps` paired blocks whose order
    alternates (bare first, then surgflow first): a load change hits both loops of a pair alike."""
    for i in range(2):  # warm-up (allocator, kernels)
        bare_step()
        ours_step(i)
    sync(device)
    t_bare, t_ours = [], []

    def block(fn, out):
        t0 = time.perf_counter()
        for i in range(steps):
            fn(i)
        sync(device)
        out.append(time.perf_counter() - t0)

    for r in range(reps):
        pair = [(lambda i: bare_step(), t_bare), (ours_step, t_ours)]
        for fn, out in (pair if r % 2 == 0 else pair[::-1]):
            block(fn, out)
    return t_bare, t_ours


def measure(args, seq_len: int, size) -> dict:
    """One row: frames/s of both loops (median block) and the per-pair ratios surgflow / bare."""
    import timm

    H, W = size
    cfg, rt, model, strat, opt = make_setup(args.backbone, size, seq_len, args.batch, args.device,
                                            args.precision, args.channels_last, hidden=args.hidden)
    from surgflow.training.schedules import make_scheduler

    sched = make_scheduler(opt, 10_000, cfg.train)
    batches = list(strat.batches(0, 0))
    frames_per_step = args.batch * seq_len

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

    t_bare, t_ours = time_pair(bare_step, ours_step, args.reps, args.steps, args.device)
    ratios = sorted(b / o for b, o in zip(t_bare, t_ours))  # same frames: time ratio = fps ratio
    frames = frames_per_step * args.steps
    return dict(T=seq_len, bare=frames / statistics.median(t_bare),
                ours=frames / statistics.median(t_ours), ratio=statistics.median(ratios),
                lo=ratios[0], hi=ratios[-1])


def main(argv=None) -> None:
    from surgflow.config import ModelConfig, TrainConfig

    default_T = TrainConfig().seq_len  # the trainer's default chunk (and every paper preset's)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", default=(64, 112), type=size_type(),
                   help="WIDTHxHEIGHT, as every surgflow command (default 112x64)")
    p.add_argument("--backbone", default="convnext_atto")
    p.add_argument("--seq-len", type=int, nargs="+", default=[default_T, 16],
                   help=f"frames per step T, one row each (default: {default_T}, the trainer's "
                        f"train.seq_len, and 16, where the per-step costs weigh 4x more)")
    p.add_argument("--hidden", type=int, default=ModelConfig().hidden, help="LSTM units")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed steps per block")
    p.add_argument("--reps", type=int, default=12, help="paired blocks (bare, surgflow) per row")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--target", type=float, default=0.9, help="ratio surgflow / bare to meet")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    H, W = args.size  # (H, W) inside the code
    rows = [measure(args, T, (H, W)) for T in args.seq_len]
    print(f"# train step vs bare backbone fwd+bwd: {args.backbone} {W}x{H} (WxH), B={args.batch}, "
          f"LSTM {args.hidden}, {args.precision}{', channels_last' if args.channels_last else ''}, "
          f"device {torch.device(args.device)}, torch threads {torch.get_num_threads()}; "
          f"{args.reps} paired blocks of {args.steps} steps per row")
    print("| T (frames per step) | bare backbone fwd+bwd (frames/s) | surgflow train step "
          "(carry_hidden, LSTM, loss, AdamW) (frames/s) | ratio surgflow / bare: median "
          f"(min-max of {args.reps} pairs) | >= {args.target} |")
    print("|---|---|---|---|---|")
    for r in rows:
        label = f"{r['T']} (train.seq_len default)" if r["T"] == default_T else str(r["T"])
        verdict = "met" if r["ratio"] >= args.target else "not met"
        print(f"| {label} | {r['bare']:.1f} | {r['ours']:.1f} | {r['ratio']:.3f} "
              f"({r['lo']:.3f}-{r['hi']:.3f}) | {verdict} |")


if __name__ == "__main__":
    main()
