"""GPU suite (one call, < 8 minutes): ConvNeXt-T at 384x216, the paper's training loop vs surgflow's.

Rows: frames/s and peak memory (torch.cuda.max_memory_allocated) of
  - paper-style: fp32, carry_hidden, 1 x 64 frames, no compile, no channels_last (the baseline);
  - surgflow: bf16 autocast + channels_last, 1 x 64 and B x 64, then + torch.compile at B x 64;
  - full_context: bf16 + channels_last, T=64, T=--long-t and one whole video of --video-t frames
    (6,000: a long Cholec80 video at 1 fps) as one BPTT sequence (micro-batch 64);
  - the data path: a small synthesized, prepared dataset read live (store -> sampler with
    --data-workers prefetch threads -> pinned host->device copy -> uint8->float, with and without
    the clip augmentation on the device) on the same model as the synthetic 1 x 64 bf16 row;
then the speed-up of surgflow's settings over the paper's loop (goal >= 5x), the data path against
synthetic tensors (goal >= 0.9), the projected time of the paper's Cholec80 schedule (40 training
videos at 1 fps, 200 epochs; goal <= 3 h), the longest T that fits per strategy with its peak
memory (doubling, then bisection to --granularity, each search under --search-cap seconds), and,
with --profile FILE, the torch profiler's table of one surgflow step (what limits a missed goal).
Random frames elsewhere, pretrained=False: no network, no dataset. Prints markdown tables, writes
every figure to --json FILE; the whole run respects --budget seconds (what is left out is marked).

    bash benchmarks/gpu_suite.sh            # on the GPU machine (benchmarks/device_check.sh calls it)
    python benchmarks/gpu_suite.py --dry-run   # the CPU smoke test of this script (< 1 minute)
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

# The paper's Cholec80 schedule: 40 training videos at 1 fps, 200 epochs. Mean video length: the
# sum of the EndoNet mean phase durations (docs/DOMAIN.md section 8): 125 + 954 + 168 + 857 + 98
# + 178 + 83 = 2,463 s, i.e. 2,463 frames at 1 fps (about 98,500 frames per epoch).
CHOLEC80_MEAN_FRAMES = 2463

# --dry-run: the same code on the CPU with a tiny backbone and small sizes (explicit flags still win).
# No compile row: Dynamo's tracing alone takes ~20 s on a 2-core machine; tests/test_gpu.py's CPU
# case compiles the training forward through the same Runtime.wrap (add --compile-backend eager
# --compile to a dry run to trace this row too).
DRY_RUN = dict(device="cpu", backbone="test_convnext", size=(32, 56), seq_len=8, micro_batch=4,
               big_batch=2, long_t=16, video_t=24, steps=1, start_t=8, max_t=8, granularity=8,
               search_cap=3.0, budget=90.0, data_videos=1, data_seconds=20.0, data_workers=1,
               compile=False, hidden=16, threads=1)


def elapsed() -> float:
    return time.perf_counter() - T0


def is_oom(e: BaseException) -> bool:
    # cuDNN and cuBLAS report a failed workspace allocation in their own words
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text


def cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(rt) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if rt.device.type == "cuda" else float("nan")


def run_config(args, size, strategy, seq_len, batch, precision, channels_last, compile, steps,
               profile=None):
    """-> (frames/s, peak GiB, seconds per frame) of `steps` timed train steps after warm-up;
    with `profile` (a path), one more step under the torch profiler, its table written there."""
    setup = make_setup(args.backbone, size, seq_len, batch, args.device, precision, channels_last,
                       compile, strategy, micro_batch=args.micro_batch, video_frames=seq_len,
                       hidden=args.hidden)
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
        peak = peak_gib(rt)
        if profile:
            write_profile(args, profile, lambda: surgflow_step(rt, model, strat, opt, batches[0]))
        return frames / dt, peak, dt / frames
    finally:
        del setup, cfg, rt, model, strat, opt
        cleanup()


def write_profile(args, path, step) -> None:
    """One step under torch.profiler -> the operators that take the time (device time first)."""
    from torch.profiler import ProfilerActivity, profile

    from surgflow.io_utils import atomic_write_text

    cuda = torch.device(args.device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        sync(args.device)
    table = None
    for key in (["self_cuda_time_total", "self_device_time_total"] if cuda else []) + ["self_cpu_time_total"]:
        try:  # the key's name moved between torch versions
            table = prof.key_averages().table(sort_by=key, row_limit=25)
            break
        except Exception:
            continue
    atomic_write_text(path, f"# one surgflow train step ({args.backbone}, bf16 + channels_last, "
                            f"carry_hidden {args.big_batch}x{args.seq_len}, eager), torch {torch.__version__}\n"
                            f"{table}\n")


def make_prepared(size, videos: int, seconds: float) -> Path:
    """A small prepared dataset (synthetic h264 video -> `prepare` at 1 fps and `size`) in a temp dir."""
    import tempfile

    from surgflow.data.prepare import prepare_dataset
    from surgflow.data.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="surgflow_gpu_suite_"))
    H, W = size
    synthesize(work / "raw", videos=videos, seed=0, width=max(W, 64), height=max(H, 36),
               min_seconds=seconds, max_seconds=seconds, workers=min(videos, 4))
    prepare_dataset("cholec80", work / "raw", work / "prepared", fps=1.0, size=size,
                    workers=min(videos, 4))
    return work / "prepared"


def run_data_path(args, root: Path, size, augment: bool, steps: int):
    """-> (frames/s, peak GiB, seconds per frame) of train steps fed live from a prepared dataset:
    store read -> sampler (args.data_workers prefetch threads) -> pinned host->device copy ->
    uint8->float (+ augmentation on the device) -> the bf16 + channels_last carry_hidden 1x64 step.
    Batches are drawn inside the timed loop, not listed before it."""
    from surgflow.data.store import PreparedDataset
    from surgflow.training.strategies import build_strategy

    ds = PreparedDataset(root)
    setup = make_setup(args.backbone, size, args.seq_len, 1, args.device, "bf16", True, False,
                       "carry_hidden", dataset=ds, augment=augment, hidden=args.hidden)
    cfg, rt, model, strat, opt = setup
    cfg.data.workers = args.data_workers  # as `surgflow train data.workers=N`
    strat = build_strategy(strat.ctx)  # its sampler reads with the prefetch threads
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
        return frames / dt, peak_gib(rt), dt / frames
    finally:
        del setup, cfg, rt, model, strat, opt
        cleanup()


def fits(args, size, strategy, T, precision, channels_last):
    """-> peak GiB of one step at B=1, T frames (nan on the CPU), or None when it runs out of memory."""
    try:
        return run_config(args, size, strategy, T, 1, precision, channels_last, False, steps=1)[1]
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        if not is_oom(e):
            raise
        cleanup()
        return None


def longest_t(args, size, strategy, precision, channels_last, cap: float) -> dict:
    """Doubling from --start-t, then bisection: {"text", "longest", "peak_gib"}."""
    start = time.perf_counter()
    ok, ok_peak, bad, T = 0, None, None, args.start_t
    capped = False
    while T <= args.max_t:  # doubling
        if time.perf_counter() - start > cap or elapsed() > args.budget:
            capped = True
            break
        peak = fits(args, size, strategy, T, precision, channels_last)
        if peak is not None:
            ok, ok_peak, T = T, peak, T * 2
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
        peak = fits(args, size, strategy, mid, precision, channels_last)
        if peak is not None:
            ok, ok_peak = mid, peak
        else:
            bad = mid
    if ok == 0:
        text = f"< {args.start_t}"
    elif bad is None:
        text = f">= {ok} ({'time cap' if capped else f'--max-t {args.max_t}'})"
    else:
        text = f"{ok}" + (" (time cap; < " + str(bad) + ")" if capped else f" (OOM at {bad})")
    return {"text": text, "longest": ok, "peak_gib": ok_peak}


def fmt_peak(p) -> str:
    return "n/a" if p is None or p != p else f"{p:.2f}"  # nan: no CUDA memory counter on the CPU


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="the same code on the CPU, tiny backbone and sizes, ~40 s budget (CI smoke test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbone", default="convnext_tiny")
    p.add_argument("--size", default=(216, 384), type=size_type(),
                   help="WIDTHxHEIGHT, as every surgflow command (default: the paper's 384x216)")
    p.add_argument("--hidden", type=int, default=512, help="LSTM units")
    p.add_argument("--seq-len", type=int, default=64, help="T of the step rows (the paper's 64)")
    p.add_argument("--micro-batch", type=int, default=64, help="full_context's train.micro_batch")
    p.add_argument("--big-batch", type=int, default=4, help="B of the larger-batch surgflow rows")
    p.add_argument("--long-t", type=int, default=1024, help="T of the long full_context row")
    p.add_argument("--video-t", type=int, default=6000,
                   help="T of the whole-video full_context row (0: skip)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave out the torch.compile row")
    p.add_argument("--compile", dest="compile", action="store_true",
                   help="keep the torch.compile row (the default; for --dry-run)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compile row (--dry-run: eager, no codegen)")
    p.add_argument("--start-t", type=int, default=64)
    p.add_argument("--max-t", type=int, default=16384)
    p.add_argument("--granularity", type=int, default=64)
    p.add_argument("--search-cap", type=float, default=60.0, help="seconds per longest-T search")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole suite")
    p.add_argument("--data-videos", type=int, default=4, help="videos of the data-path rows (0: skip)")
    p.add_argument("--data-seconds", type=float, default=240.0, help="length of each of those videos")
    p.add_argument("--data-workers", type=int, default=4,
                   help="sampler prefetch threads of the data-path rows (data.workers)")
    p.add_argument("--schedule-videos", type=int, default=40)
    p.add_argument("--schedule-frames", type=int, default=CHOLEC80_MEAN_FRAMES,
                   help="mean frames per training video at 1 fps (Cholec80: 2,463)")
    p.add_argument("--schedule-epochs", type=int, default=200)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; --dry-run: 1, CI machines are small)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every figure to FILE")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="torch profiler table of one surgflow step (bf16 + channels_last, B x 64)")
    dry, _ = p.parse_known_args(argv)
    if dry.dry_run:
        p.set_defaults(**DRY_RUN)
    args = p.parse_args(argv)
    size = args.size  # (H, W) inside the code
    H, W = size
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32, as in the paper
        torch.backends.cudnn.allow_tf32 = False
    if args.compile and args.compile_backend != "inductor":
        real_compile = torch.compile  # Runtime.wrap calls torch.compile(module)

        def compile_with_backend(model, **kw):
            return real_compile(model, **{"backend": args.compile_backend, **kw})

        torch.compile = compile_with_backend
    report = {"device": name, "torch": torch.__version__, "backbone": args.backbone,
              "size_wxh": f"{W}x{H}", "dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d"),
              "rows": [], "data_path": [], "longest_t": [], "goals": {}}
    print(f"# surgflow GPU suite: {args.backbone} at {W}x{H}, device {name}, torch {torch.__version__}"
          + (" (DRY RUN: CPU smoke test, the figures mean nothing)" if args.dry_run else ""))
    print()
    Bb, T64, mb = args.big_batch, args.seq_len, args.micro_batch
    rows = [
        ("paper", f"paper-style: fp32, carry_hidden 1x{T64}, no compile", "carry_hidden", T64, 1,
         "fp32", False, False),
        ("bf16_1x64", f"surgflow: bf16 + channels_last, carry_hidden 1x{T64}", "carry_hidden", T64,
         1, "bf16", True, False),
        ("bf16_Bx64", f"surgflow: bf16 + channels_last, carry_hidden {Bb}x{T64}", "carry_hidden",
         T64, Bb, "bf16", True, False),
        ("fc_64", f"surgflow: full_context bf16 + channels_last, 1x{T64} (micro-batch {mb})",
         "full_context", T64, 1, "bf16", True, False),
        ("fc_long", f"surgflow: full_context bf16 + channels_last, 1x{args.long_t} (micro-batch {mb})",
         "full_context", args.long_t, 1, "bf16", True, False),
    ]
    if args.video_t:
        rows.append(("fc_video", f"surgflow: full_context bf16 + channels_last, one whole "
                     f"{args.video_t}-frame video as one BPTT sequence (micro-batch {mb})",
                     "full_context", args.video_t, 1, "bf16", True, False))
    compile_row = ("compile_Bx64", f"surgflow: bf16 + channels_last + compile ({args.compile_backend}), "
                   f"carry_hidden {Bb}x{T64}", "carry_hidden", T64, Bb, "bf16", True, True)
    header = ("| loop | frames/s | vs paper | peak memory (GiB) | ms/frame |\n"
              "|---|---|---|---|---|")
    results = {}

    def time_row(key, label, strategy, T, B, prec, cl, comp, until: float) -> None:
        if elapsed() > args.budget * until:
            print(f"| {label} | skipped (budget) | | | |")
            report["rows"].append({"key": key, "label": label, "skipped": "budget"})
            return
        steps = min(args.steps, 2) if T > 1024 else args.steps  # a long sequence is a long step
        try:
            fps, peak, spf = run_config(args, size, strategy, T, B, prec, cl, comp, steps)
        except Exception as e:  # one failing row (OOM, compile problem) must not lose the others
            cleanup()
            msg = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
            print(f"| {label} | failed: {msg} | | | |")
            report["rows"].append({"key": key, "label": label, "failed": msg})
            return
        results[key] = (fps, peak, spf)
        base = results.get("paper", (float("nan"),))[0]
        report["rows"].append({"key": key, "label": label, "frames_per_s": fps,
                               "vs_paper": fps / base, "peak_gib": peak,
                               "ms_per_frame": spf * 1e3, "T": T, "B": B})
        print(f"| {label} | {fps:.1f} | {fps / base:.2f}x | {fmt_peak(peak)} | {spf * 1e3:.2f} |",
              flush=True)

    # order: the cheap rows, the data path and the profile, then the compile row (its compilation
    # is the slowest set-up), then the longest-T searches with whatever time is left
    print(header)
    for row in rows:
        time_row(*row, until=0.4)
    plain = results.get("bf16_1x64")  # the data path's synthetic reference (same model and step)

    print()
    if args.data_videos > 0 and elapsed() < args.budget * 0.5:
        root = None
        print("| data path | frames/s | vs synthetic (goal >= 0.9) | peak memory (GiB) | ms/frame |")
        print("|---|---|---|---|---|")
        try:
            root = make_prepared(size, args.data_videos, args.data_seconds)
            for key, label, aug in (
                    ("store", f"prepared store -> sampler -> pinned copy -> device, bf16 + channels_last "
                              f"1x{T64}", False),
                    ("store_aug", "... + clip augmentation on the device", True)):
                fps, peak, spf = run_data_path(args, root, size, aug, args.steps * 2)
                ratio = fps / plain[0] if plain else float("nan")
                report["data_path"].append({"key": key, "label": label, "frames_per_s": fps,
                                            "vs_synthetic": ratio, "peak_gib": peak})
                print(f"| {label} | {fps:.1f} | {ratio:.2f} | {fmt_peak(peak)} | {spf * 1e3:.2f} |",
                      flush=True)
            if plain:
                report["goals"]["data_path"] = {
                    "ratio": min(r["vs_synthetic"] for r in report["data_path"]), "goal": 0.9}
        except Exception as e:
            cleanup()
            print(f"| data path | failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]} | | | |")
        finally:
            if root is not None:
                import shutil

                shutil.rmtree(root.parent, ignore_errors=True)
        print(f"(data path: {args.data_videos} synthetic videos of {args.data_seconds:g} s prepared at "
              f"1 fps, {W}x{H}, data.workers={args.data_workers}; synthetic = the row 'surgflow: "
              f"bf16 + channels_last, carry_hidden 1x{T64}')")
    else:
        print("data path: skipped (" + ("--data-videos 0" if args.data_videos <= 0 else "budget") + ")")

    if args.profile:
        if elapsed() < args.budget * 0.55:
            try:
                run_config(args, size, "carry_hidden", T64, Bb, "bf16", True, False, 1,
                           profile=args.profile)
                print(f"\nprofile of one step (bf16 + channels_last, {Bb}x{T64}): {args.profile}")
                report["profile"] = str(args.profile)
            except Exception as e:
                cleanup()
                print(f"\nprofile: failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}")
        else:
            print("\nprofile: skipped (budget)")

    print()
    print(header)
    if args.compile:
        time_row(*compile_row, until=0.6)
    else:
        print(f"| {compile_row[1]} | skipped (--no-compile) | | | |")
        report["rows"].append({"key": compile_row[0], "label": compile_row[1], "skipped": "--no-compile"})

    goals = report["goals"]
    base = results.get("paper", (None,))[0]
    ours = {k: v for k, v in results.items() if k != "paper"}
    print()
    if base and ours:
        best = max(ours, key=lambda k: ours[k][0])
        goals["speedup"] = {"best_row": best, "ratio": ours[best][0] / base, "goal": 5.0}
        print(f"surgflow's best settings ({best}) vs the paper's loop: "
              f"**{ours[best][0] / base:.2f}x** frames/s (goal >= 5x)")
    fc64, fcl = results.get("fc_64"), results.get("fc_long")
    if fc64 and fcl and fc64[1] == fc64[1]:
        print(f"full_context T={args.long_t} vs T={T64}: peak memory x{fcl[1] / fc64[1]:.2f} (target <= 1.5), "
              f"time per frame x{fcl[2] / fc64[2]:.2f}")
    if plain and fcl:
        print(f"full_context T={args.long_t} time per frame vs plain backprop (carry_hidden 1x{T64}, bf16): "
              f"x{fcl[2] / plain[2]:.2f} (target <= 1.6)")
    if "fc_video" in results:
        fv = results["fc_video"]
        goals["whole_video"] = {"T": args.video_t, "fits": True, "peak_gib": fv[1]}
        print(f"one {args.video_t}-frame video as one BPTT sequence with full_context: fits, peak "
              f"{fmt_peak(fv[1])} GiB, {fv[0]:.1f} frames/s")
    elif args.video_t:
        goals["whole_video"] = {"T": args.video_t, "fits": False}
        print(f"one {args.video_t}-frame video as one BPTT sequence with full_context: not measured "
              f"(see its row)")
    frames_total = args.schedule_videos * args.schedule_frames * args.schedule_epochs
    sched = {key: frames_total / fps / 3600 for key, (fps, _, _) in results.items()}
    if sched:
        pick = goals.get("speedup", {}).get("best_row", "paper")
        goals["schedule_hours"] = {"frames": frames_total, "hours": sched, "best_row": pick, "goal": 3.0}
        print(f"projected Cholec80 schedule ({args.schedule_videos} videos x {args.schedule_frames} "
              f"frames at 1 fps x {args.schedule_epochs} epochs = {frames_total:,} frames, training "
              f"steps only, no validation): " + ", ".join(f"{k} {h:.2f} h" for k, h in sched.items())
              + f" (goal <= 3 h with {pick})")
    print()
    print("| strategy (B=1) | longest T that fits | peak memory there (GiB) |")
    print("|---|---|---|")
    searches = (("carry_hidden, fp32 (paper-style)", "carry_hidden", "fp32", False),
                ("carry_hidden, bf16 + channels_last", "carry_hidden", "bf16", True),
                (f"full_context, bf16 + channels_last, micro-batch {mb}", "full_context", "bf16", True))
    for i, (label, strategy, prec, cl) in enumerate(searches):
        left = args.budget - elapsed()
        if left <= 0:
            print(f"| {label} | skipped (budget) | |")
            report["longest_t"].append({"label": label, "skipped": "budget"})
            continue
        cap = min(args.search_cap, left / (len(searches) - i))  # share what is left
        try:
            r = longest_t(args, size, strategy, prec, cl, cap)
        except Exception as e:  # a failing search must not lose the others
            cleanup()
            r = {"text": f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}",
                 "longest": None, "peak_gib": None}
        report["longest_t"].append({"label": label, **r})
        print(f"| {label} | {r['text']} | {fmt_peak(r['peak_gib'])} |", flush=True)
    print()
    report["suite_seconds"] = elapsed()
    print(f"suite time: {elapsed():.0f} s")
    if args.json:
        from surgflow.io_utils import atomic_write_json

        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
