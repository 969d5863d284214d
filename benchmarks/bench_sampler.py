"""Throughput of the carry-hidden sampler from a prepared store, and of clip augmentation on CPU.

    python benchmarks/bench_sampler.py                    # synthesize + prepare a small dataset
    python benchmarks/bench_sampler.py --root PREPARED    # use an existing prepared dataset

Part 1: frames/s delivered by LanesSampler (T=64) over one epoch, per worker count, next to a plain
sequential `read_frames` of the same frames in chunks of T (the ceiling without labels/batching),
with and without a simulated consumer that spends `--compute-ms` per batch (the overlap that the
background workers are for).
Part 2: ClipAugment (one vectorised call per batch) vs the same transforms done with
torchvision.transforms.v2.functional one sequence at a time, frames/s on CPU.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_dataset(tmp: Path, videos: int, fps: float, seconds: float) -> Path:
    raw, prepared = tmp / "raw", tmp / "prepared"
    env = {**os.environ, "SURGFLOW_NO_PROGRESS": "1"}
    run = [sys.executable, "-m", "surgflow"]
    subprocess.run(run + ["synth", str(raw), "--videos", str(videos), "--seed", "0", "--width", "384",
                          "--height", "216", "--min-seconds", str(seconds), "--max-seconds",
                          str(seconds)], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(run + ["prepare", "cholec80", str(raw), str(prepared), "--fps", str(fps),
                          "--size", "384x216"], check=True, env=env, stdout=subprocess.DEVNULL)
    return prepared


def best_time(fn, repeat: int) -> float:
    """Shortest of `repeat` runs (the machine may be shared: the minimum is the least disturbed)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_sampler(root: Path, seq_len: int, lanes: int, compute_ms: float, repeat: int) -> None:
    from surgflow.data.samplers import LanesSampler
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(root)
    total = sum(ds.num_frames(v) for v in ds.videos)
    H, W = ds.size
    print(f"dataset {root}: {len(ds.videos)} videos, {total} frames at {H}x{W}, storage "
          f"{getattr(ds, 'manifest', {}).get('storage', '?')}; lanes={lanes} T={seq_len}; torch threads "
          f"{torch.get_num_threads()}")

    # ceiling: sequential read_frames of every frame in chunks of T, nothing else
    def read_all():
        for v in ds.videos:
            for s in range(0, ds.num_frames(v), seq_len):
                ds.read_frames(v, s, min(s + seq_len, ds.num_frames(v)))

    raw_fps = total / best_time(read_all, repeat)

    rows = [("read_frames (sequential)", "-", raw_fps, 1.0)]
    for ms in ([0.0, compute_ms] if compute_ms > 0 else [0.0]):
        for workers in (0, 1, 2):
            sampler = LanesSampler(ds, lanes=lanes, seq_len=seq_len, seed=0, workers=workers)
            delivered = []

            def epoch():
                delivered.append(0)
                for batch in sampler.iter_epoch(0):
                    delivered[-1] += int(batch.valid.sum())
                    if ms:
                        time.sleep(ms / 1000)  # stand-in for the training step (releases the GIL)

            dt = best_time(epoch, repeat)
            assert delivered[-1] == total, "one epoch delivers every frame once"
            delivered = total
            label = f"LanesSampler workers={workers}" + (f" +{ms:.0f} ms/step" if ms else "")
            rows.append((label, f"{ms:.0f}", delivered / dt, (delivered / dt) / raw_fps))
    print(f"{'reader':<40} {'frames/s':>10} {'vs read_frames':>15}")
    for label, _, fps, ratio in rows:
        print(f"{label:<40} {fps:>10.0f} {ratio:>15.2f}")


def torchvision_per_sequence(frames: torch.Tensor, params: dict, per_frame: bool = False) -> torch.Tensor:
    """Baseline: the same kinds of transform with torchvision v2 functional, one call per sequence
    (or per frame, like the paper's per-frame pipeline)."""
    if per_frame:  # [B, T, ...] -> B*T one-frame sequences
        B, T = frames.shape[:2]
        rep = {k: v.repeat_interleave(T, 0) for k, v in params.items()}
        return torchvision_per_sequence(frames.reshape(B * T, 1, *frames.shape[2:]), rep).reshape(
            frames.shape)
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    B, T, C, H, W = frames.shape
    out = []
    for b in range(B):
        x = frames[b]  # [T, 3, H, W]: torchvision applies one parameter set to all T frames
        if params["scale"][b] != 1 or params["crop"][b] != 1:
            x = TF.affine(x, angle=float(params["angle"][b]),
                          translate=[float(params["shift"][b, 0]) * W, float(params["shift"][b, 1]) * H],
                          scale=float(params["scale"][b]), shear=[0.0, 0.0],
                          interpolation=InterpolationMode.BILINEAR)
            c = float(params["crop"][b])
            h, w = int(H * c), int(W * c)
            x = TF.resized_crop(x, (H - h) // 2, (W - w) // 2, h, w, [H, W], antialias=False)
        x = TF.adjust_brightness(x, float(params["brightness"][b]))
        x = TF.adjust_contrast(x, float(params["contrast"][b]))
        x = (x + params["rgb_shift"][b].float().view(3, 1, 1)).clamp(0, 1)
        out.append(x)
    return torch.stack(out)


def bench_augment(batch: int, seq_len: int, H: int, W: int, reps: int, repeat: int) -> None:
    from surgflow.data.augment import ClipAugment

    aug = ClipAugment(p_affine=1.0, p_crop=1.0, p_color=1.0, p_rgb_shift=1.0)  # worst case: all on
    x = torch.rand(batch, seq_len, 3, H, W)
    gen = torch.Generator().manual_seed(0)
    params = aug.sample_params(batch, gen)
    rows = []
    for name, fn in (("ClipAugment (vectorised, all on)", lambda: aug.apply(x, params)),
                     ("torchvision v2 per sequence", lambda: torchvision_per_sequence(x, params)),
                     ("torchvision v2 per frame", lambda: torchvision_per_sequence(x, params, True)),
                     ("ClipAugment defaults (p=0.5)", lambda: ClipAugment()(x, generator=gen))):
        fn()  # warm-up
        dt = best_time(lambda: [fn() for _ in range(reps)], repeat)
        rows.append((name, reps * batch * seq_len / dt))
    print(f"\naugmentation on CPU, float [B={batch}, T={seq_len}, 3, {H}, {W}], "
          f"{torch.get_num_threads()} threads")
    print(f"{'augmentation':<40} {'frames/s':>10} {'vs torchvision':>15}")
    for name, fps in rows:
        print(f"{name:<40} {fps:>10.0f} {fps / rows[1][1]:>15.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, help="prepared dataset (default: build one in a temp dir)")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each synthetic video")
    ap.add_argument("--fps", type=float, default=5.0, help="prepare fps (more frames than 1 fps)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lanes", type=int, default=1)
    ap.add_argument("--compute-ms", type=float, default=20.0, help="simulated step time; 0 = off")
    ap.add_argument("--aug-batch", type=int, default=2)
    ap.add_argument("--aug-seq-len", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="augmentation calls per timing")
    ap.add_argument("--repeat", type=int, default=3, help="timings per row; the best is reported")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            try:
                import surgflow.data.prepare  # noqa: F401
                import surgflow.data.store  # noqa: F401
            except ImportError as e:
                print(f"sampler benchmark skipped: {e} (surgflow prepare/store not available yet)")
            else:
                t0 = time.perf_counter()
                root = build_dataset(Path(tmp), args.videos, args.fps, args.seconds)
                print(f"built synthetic dataset in {time.perf_counter() - t0:.1f} s")
        if root is not None:
            bench_sampler(root, args.seq_len, args.lanes, args.compute_ms, args.repeat)
        bench_augment(args.aug_batch, args.aug_seq_len, 216, 384, args.reps, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
