"""GPU suite (one call, < 8 minutes): ConvNeXt-T at 384x216, the paper's training loop vs surgflow's.

Rows: frames/s and peak memory (torch.cuda.max_memory_allocated) of
  - paper-style: fp32, carry_hidden, 1 x 64 frames, no compile, no channels_last;
  - surgflow: bf16 autocast + channels_last (+ torch.compile with --compile), 1 x 64 and B x 64;
  - full_context: bf16 + channels_last, T=64 and T=1024 (micro-batch 64): exact long-sequence
    backprop, memory bounded by the micro-batch;
  - the data path: a small synthesized, prepared dataset read live through the sampler, with and
    without the clip augmentation on the device;
then the longest T that fits per strategy (doubling, then bisection to --granularity, each search
under --search-cap seconds). Random frames elsewhere, pretrained=False: no network, no dataset.
Prints markdown tables; the whole run respects --budget seconds (what is left out is marked).

    bash benchmarks/gpu_suite.sh            # on the GPU machine
    python benchmarks/gpu_suite.py --device cpu --backbone test_convnext --size 112x64 \
        --max-t 256 --budget 120            # CPU smoke test of the script itself
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import make_setup, surgflow_step, sync  # noqa: E402

from surgflow.cli_args import size_type  # noqa: E402

import torch  # noqa: E402

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_config(args, size, strategy, seq_len, batch, precision, channels_last, compile, steps,
               micro_batch=64, hidden=512):
    """-> (frames/s, peak GiB, seconds per frame) of `steps` timed train steps after warm-up."""
    setup = make_setup(args.backbone, size, seq_len, batch, args.device, precision, channels_last,
                       compile, strategy, micro_batch=micro_batch, video_frames=seq_len, hidden=hidden)
    cfg, rt, model, strat, opt = setup
    try:
        batches = list(strat.batches(0, 0))
        warm = 3 if compile else (0 if steps == 1 else 1)  # a fit probe needs one step only
        for i in range(warm):
            surgflow_step(rt, model, strat, opt, batches[i % len(batches)])
        sync(args.device)
        if rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            surgflow_step(rt, model, strat, opt, batches[i % len(batches)])
            sync(args.device)
            times.append(time.perf_counter() - t0)
        dt = statistics.median(times)
        frames = batch * seq_len
        peak = torch.cuda.max_memory_allocated() / 2**30 if rt.device.type == "cuda" else float("nan")
        return frames / dt, peak, dt / frames
    finally:
        del setup, cfg, rt, model, strat, opt
        cleanup()


def make_prepared(size, videos: int, seconds: float) -> Path:
    """A small prepared dataset (synthetic h264 video -> `prepare` at 1 fps and `size`) in a temp dir."""
    import tempfile

    from surgflow.data.prepare import prepare_dataset
    from surgflow.data.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="surgflow_gpu_suite_"))
    H, W = size
    synthesize(work / "raw", videos=videos, seed=0, width=W, height=H, min_seconds=seconds,
               max_seconds=seconds)
    prepare_dataset("cholec80", work / "raw", work / "prepared", fps=1.0, size=size,
                    workers=min(videos, 4))
    return work / "prepared"


def run_data_path(args, root: Path, size, augment: bool, steps: int):
    """-> (frames/s, peak GiB, seconds per frame) of train steps fed live from a prepared dataset:
    store read -> sampler -> pinned host->device copy -> uint8->float (+ augmentation on the
    device) -> the bf16 + channels_last carry_hidden 1x64 step. Batches are drawn inside the timed
    loop, not listed before it."""
    from surgflow.data.store import PreparedDataset

    ds = PreparedDataset(root)
    setup = make_setup(args.backbone, size, 64, 1, args.device, "bf16", True, False, "carry_hidden",
                       dataset=ds, augment=augment)
    cfg, rt, model, strat, opt = setup
    try:
        epoch, it = 0, iter(strat.batches(0, 0))

        def next_batch():
            nonlocal epoch, it
            try:
                return next(it)
            except StopIteration:
                epoch += 1
                it = iter(strat.batches(epoch, 0))
                return next(it)

        surgflow_step(rt, model, strat, opt, next_batch())  # warm-up
        sync(args.device)
        if rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0, frames = time.perf_counter(), 0
        for _ in range(steps):
            batch = next_batch()
            frames += int(batch.valid.sum())
            surgflow_step(rt, model, strat, opt, batch)
        sync(args.device)
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if rt.device.type == "cuda" else float("nan")
        return frames / dt, peak, dt / frames
    finally:
        del setup, cfg, rt, model, strat, opt
        cleanup()


def fits(args, size, strategy, T, precision, channels_last) -> bool:
    try:
        run_config(args, size, strategy, T, 1, precision, channels_last, False, steps=1)
        return True
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        if not is_oom(e):
            raise
        cleanup()
        return False


def longest_t(args, size, strategy, precision, channels_last) -> str:
    start, cap = time.perf_counter(), args.search_cap
    ok, bad, T = 0, None, args.start_t
    capped = False
    while T <= args.max_t:  # doubling
        if time.perf_counter() - start > cap or elapsed() > args.budget:
            capped = True
            break
        if fits(args, size, strategy, T, precision, channels_last):
            ok, T = T, T * 2
        else:
            bad = T
            break
    while bad is not None and bad - ok > args.granularity and not capped:  # bisection
        if time.perf_counter() - start > cap or elapsed() > args.budget:
            capped = True
            break
        mid = (ok + bad) // 2 // args.granularity * args.granularity or args.granularity
        if mid <= ok:
            break
        if fits(args, size, strategy, mid, precision, channels_last):
            ok = mid
        else:
            bad = mid
    if ok == 0:
        return f"< {args.start_t}"
    if bad is None:
        return f">= {ok} ({'time cap' if capped else f'--max-t {args.max_t}'})"
    return f"{ok}" + (" (time cap; < " + str(bad) + ")" if capped else f" (OOM at {bad})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbone", default="convnext_tiny")
    p.add_argument("--size", default=(216, 384), type=size_type(),
                   help="WIDTHxHEIGHT, as every surgflow command (default: the paper's 384x216)")
    p.add_argument("--big-batch", type=int, default=4, help="B of the larger-batch surgflow row")
    p.add_argument("--long-t", type=int, default=1024, help="T of the long full_context row")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="add a torch.compile row")
    p.add_argument("--start-t", type=int, default=64)
    p.add_argument("--max-t", type=int, default=16384)
    p.add_argument("--granularity", type=int, default=64)
    p.add_argument("--search-cap", type=float, default=75.0, help="seconds per longest-T search")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole suite")
    p.add_argument("--data-videos", type=int, default=4, help="videos of the data-path rows (0: skip)")
    p.add_argument("--data-seconds", type=float, default=240.0, help="length of each of those videos")
    args = p.parse_args(argv)
    size = args.size  # (H, W) inside the code
    H, W = size
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32, as in the paper
        torch.backends.cudnn.allow_tf32 = False
    print(f"# surgflow GPU suite: {args.backbone} at {W}x{H}, device {name}, torch {torch.__version__}")
    print()
    rows = [
        ("paper-style: fp32, carry_hidden 1x64, no compile", "carry_hidden", 64, 1, "fp32", False, False),
        ("surgflow: bf16 + channels_last, carry_hidden 1x64", "carry_hidden", 64, 1, "bf16", True, False),
        (f"surgflow: bf16 + channels_last, carry_hidden {args.big_batch}x64", "carry_hidden", 64,
         args.big_batch, "bf16", True, False),
    ]
    if args.compile:
        rows.append((f"surgflow: bf16 + channels_last + compile, carry_hidden {args.big_batch}x64",
                     "carry_hidden", 64, args.big_batch, "bf16", True, True))
    rows += [
        ("surgflow: full_context bf16 + channels_last, 1x64 (micro-batch 64)", "full_context", 64, 1,
         "bf16", True, False),
        (f"surgflow: full_context bf16 + channels_last, 1x{args.long_t} (micro-batch 64)",
         "full_context", args.long_t, 1, "bf16", True, False),
    ]
    print("| loop | frames/s | vs paper | peak memory (GiB) | ms/frame |")
    print("|---|---|---|---|---|")
    base = None
    results = {}
    for label, strategy, T, B, prec, cl, comp in rows:
        if elapsed() > args.budget * 0.5:
            print(f"| {label} | skipped (budget) | | | |")
            continue
        try:
            fps, peak, spf = run_config(args, size, strategy, T, B, prec, cl, comp, args.steps)
        except Exception as e:  # one failing row (OOM, compile problem) must not lose the others
            cleanup()
            print(f"| {label} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} | | | |")
            continue
        base = base or fps
        results[(strategy, T, B, prec)] = (fps, peak, spf)
        print(f"| {label} | {fps:.1f} | {fps / base:.2f}x | {peak:.2f} | {spf * 1e3:.2f} |", flush=True)
    if args.data_videos > 0 and elapsed() < args.budget * 0.5:
        root = None
        try:
            root = make_prepared(size, args.data_videos, args.data_seconds)
            for label, aug in (("data path: prepared store -> sampler -> device, bf16 + channels_last 1x64", False),
                               ("data path: ... + clip augmentation on the device", True)):
                fps, peak, spf = run_data_path(args, root, size, aug, args.steps * 2)
                print(f"| {label} | {fps:.1f} | {fps / base:.2f}x | {peak:.2f} | {spf * 1e3:.2f} |"
                      if base else f"| {label} | {fps:.1f} | | {peak:.2f} | {spf * 1e3:.2f} |", flush=True)
        except Exception as e:
            cleanup()
            print(f"| data path | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} | | | |")
        finally:
            if root is not None:
                import shutil

                shutil.rmtree(root.parent, ignore_errors=True)
        print(f"(data path rows: {args.data_videos} synthetic videos of {args.data_seconds:g} s prepared at "
              f"1 fps, {W}x{H}; compare with the synthetic-tensor row 'surgflow: bf16 + channels_last, "
              f"carry_hidden 1x64')")
    fc64, fcl = results.get(("full_context", 64, 1, "bf16")), results.get(("full_context", args.long_t, 1, "bf16"))
    if fc64 and fcl:
        print()
        print(f"full_context T={args.long_t} vs T=64: peak memory x{fcl[1] / fc64[1]:.2f} (target <= 1.5), "
              f"time per frame x{fcl[2] / fc64[2]:.2f}")
    plain = results.get(("carry_hidden", 64, 1, "bf16"))
    if plain and fcl:
        print(f"full_context T={args.long_t} time per frame vs plain backprop (carry_hidden 1x64, bf16): "
              f"x{fcl[2] / plain[2]:.2f} (target <= 1.6)")
    print()
    print("| strategy (B=1) | longest T that fits |")
    print("|---|---|")
    for label, strategy, prec, cl in (("carry_hidden, fp32 (paper-style)", "carry_hidden", "fp32", False),
                                      ("carry_hidden, bf16 + channels_last", "carry_hidden", "bf16", True),
                                      ("full_context, bf16 + channels_last, micro-batch 64",
                                       "full_context", "bf16", True)):
        if elapsed() > args.budget:
            print(f"| {label} | skipped (budget) |")
            continue
        print(f"| {label} | {longest_t(args, size, strategy, prec, cl)} |", flush=True)
    print()
    print(f"suite time: {elapsed():.0f} s")


if __name__ == "__main__":
    main()
