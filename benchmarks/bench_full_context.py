"""full_context vs plain backpropagation: gradient equality, peak memory vs T, time per frame.

    python benchmarks/bench_full_context.py                      # CPU, convnext_atto at 64x112
    python benchmarks/bench_full_context.py --device cuda --backbone convnext_tiny \
        --height 216 --width 384 --precision bf16

Each timing/memory setting runs in its own subprocess, so peaks do not leak between settings.
Peak memory: CUDA -> torch.cuda.max_memory_allocated minus the allocation before the frames were
made; CPU -> ru_maxrss high-water mark minus the resident size before the frames were made.
Targets (issue 3): gradient relative difference <= 1e-5 (BN-free, fp32); peak memory at T=1024 vs
T=64 <= 1.5x; full_context time per frame <= 1.6x of plain backprop.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(args):
    import torch

    from surgflow.config import from_dict
    from surgflow.models import build_model

    torch.manual_seed(0)
    cfg = from_dict({"model": {"backbone": args.backbone, "head": args.head, "norm": "native"},
                     "task": {"tasks": ["phase"]},
                     "train": {"micro_batch": args.micro_batch, "channels_last": args.channels_last}})
    model = build_model(cfg, num_phases=7, size=(args.height, args.width)).to(args.device).train()
    return cfg, model


def _batch(T, args, seed=0):
    import torch

    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        frames=torch.randint(0, 256, (1, T, 3, args.height, args.width), dtype=torch.uint8, generator=g).to(args.device),
        phase=torch.randint(0, 7, (1, T), generator=g).to(args.device),
        valid=torch.ones(1, T, dtype=torch.bool, device=args.device),
        new_video=torch.ones(1, dtype=torch.bool, device=args.device))


def _autocast(args):
    import contextlib

    import torch

    if args.precision == "bf16":
        return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _plain_step(model, b, cfg, args):
    with _autocast(args):
        out, _ = model(b.frames.float() / 255, None, b.new_video)  # uint8 -> float on the device
        total, _ = model.loss(out, b)
    total.backward()
    return float(total.detach())


def _full_step(model, b, cfg, args):
    from surgflow.training.full_context import full_context_step

    with _autocast(args):
        loss, _, _ = full_context_step(model, b.frames, b, args.micro_batch)
    return loss


def _sync(args):
    import torch

    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(args) -> dict:
    """Peak memory of one setting (mode, T) in a fresh process, after a warm-up at a small T."""
    import torch

    cfg, model = _setup(args)
    step = _plain_step if args.mode == "plain" else _full_step
    warm = _batch(min(args.T, 16), args, seed=1)
    model.zero_grad(set_to_none=False)
    step(model, warm, cfg, args)  # kernels, allocator and gradient buffers warmed up
    del warm
    _sync(args)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    b = _batch(args.T, args)  # the frames count: full_context keeps the whole sequence
    model.zero_grad(set_to_none=False)
    step(model, b, cfg, args)
    _sync(args)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"mode": args.mode, "T": args.T, "peak_bytes": peak - base}


def time_settings(args, settings) -> dict:
    """Seconds per frame of each (mode, T), min over rounds; settings interleaved within a round,
    so that a load change on a shared machine hits all of them alike."""
    cfg, model = _setup(args)
    batches = {T: _batch(T, args) for _, T in settings}
    model.zero_grad(set_to_none=False)
    _full_step(model, _batch(16, args, seed=1), cfg, args)  # warm-up
    _plain_step(model, _batch(16, args, seed=1), cfg, args)
    best = {}
    for _ in range(args.repeats):
        for mode, T in settings:
            step = _plain_step if mode == "plain" else _full_step
            model.zero_grad(set_to_none=False)
            _sync(args)
            t0 = time.perf_counter()
            step(model, batches[T], cfg, args)
            _sync(args)
            dt = (time.perf_counter() - t0) / T
            best[(mode, T)] = min(best.get((mode, T), dt), dt)
    return best


def gradient_check(args) -> float:
    """Relative difference of all parameter gradients, full_context vs plain backprop (fp32)."""

    cfg, model = _setup(args)
    b = _batch(args.t_grad, args, seed=2)
    grads = []
    for step in (_plain_step, _full_step):
        model.zero_grad(set_to_none=True)
        step(model, b, cfg, argparse.Namespace(**{**vars(args), "precision": "fp32"}))
        grads.append({n: p.grad.double().clone() for n, p in model.named_parameters() if p.grad is not None})
    g1, g2 = grads
    num = sum(((g1[n] - g2[n]) ** 2).sum() for n in g1) ** 0.5
    den = sum((g1[n] ** 2).sum() for n in g1) ** 0.5
    return float(num / den)


def run_setting(args, mode: str, T: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--T", str(T)]
    for k in ("device", "backbone", "head", "height", "width", "micro_batch", "precision"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    if args.channels_last:
        cmd.append("--channels-last")
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SURGFLOW_NO_PROGRESS": "1"})
    if out.returncode != 0:
        raise SystemExit(f"setting {mode} T={T} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="convnext_atto")
    p.add_argument("--head", default="lstm")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=112)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--t-short", type=int, default=64)
    p.add_argument("--t-long", type=int, default=1024)
    p.add_argument("--t-grad", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3, help="timing rounds (min is kept)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--plain-long", action="store_true", help="also run plain backprop at --t-long")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import torch

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    print(f"# {args.backbone} + {args.head}, {args.height}x{args.width}, micro-batch {args.micro_batch}, "
          f"{args.precision}{', channels_last' if args.channels_last else ''}, {dev}")
    rel = gradient_check(args)
    print(f"gradient relative difference full_context vs plain (fp32, T={args.t_grad}): {rel:.2e}"
          f"  (target <= 1e-5: {'ok' if rel <= 1e-5 else 'FAIL'})")
    settings = [("plain", args.t_short), ("full", args.t_short), ("full", args.t_long)]
    if args.plain_long:
        settings.append(("plain", args.t_long))
    rows = [run_setting(args, m, T) for m, T in settings]
    timing = time_settings(args, settings)
    for r in rows:
        r["s_per_frame"] = timing[(r["mode"], r["T"])]
    print(f"\n{'strategy':<14}{'T':>6}{'ms/frame':>10}{'peak MiB':>10}")
    for r in rows:
        name = "full_context" if r["mode"] == "full" else "plain"
        print(f"{name:<14}{r['T']:>6}{r['s_per_frame'] * 1e3:>10.2f}{r['peak_bytes'] / 2**20:>10.1f}")
    plain, full_s, full_l = rows[0], rows[1], rows[2]
    mem_ratio = full_l["peak_bytes"] / max(full_s["peak_bytes"], 1)
    t_short = full_s["s_per_frame"] / plain["s_per_frame"]
    t_long = full_l["s_per_frame"] / plain["s_per_frame"]
    print(f"\nfull_context peak memory T={args.t_long} / T={args.t_short}: {mem_ratio:.2f}x "
          f"(target <= 1.5x: {'ok' if mem_ratio <= 1.5 else 'FAIL'})")
    print(f"full_context time per frame / plain (T={args.t_short}): {t_short:.2f}x; "
          f"at T={args.t_long}: {t_long:.2f}x (target <= 1.6x: {'ok' if max(t_short, t_long) <= 1.6 else 'FAIL'})")
    if args.plain_long:
        print(f"plain peak memory T={args.t_long} / T={args.t_short}: "
              f"{rows[3]['peak_bytes'] / max(plain['peak_bytes'], 1):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
