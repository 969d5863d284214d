"""Online inference latency: constant time per frame, vs a sliding window, onnxruntime vs PyTorch.

    python benchmarks/bench_online.py                       # tiny model (test_convnext, 64x112)
    python benchmarks/bench_online.py --backbone convnext_atto --size 216x384 --hidden 512

Per-frame latency of OnlinePredictor.step_tensor (one frame, carried LSTM state, eval mode):
  * at frame 3,000 vs frame 10 of a stream (ratio; target <= 1.2 = constant time per frame). The
    stream is real: every frame up to 3,000 runs through the whole model, unless --fast-forward,
    which advances the state through the temporal head alone (same state shapes; saves time with
    big backbones);
  * against re-running a 64-frame sliding window each frame (the alternative without carried
    state), measured in the same run;
  * onnxruntime (CPUExecutionProvider) vs PyTorch on the same exported one-frame step.
Medians over --repeats frames (plus the ratio of minima, robust on a loaded machine); threads as set by --threads for both runtimes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch


def build(backbone: str, size: tuple[int, int], hidden: int, head: str):
    from surgflow.config import from_dict
    from surgflow.labels import ANTICIPATION_INSTRUMENTS, CHOLEC80_PHASES, CHOLEC80_TOOLS
    from surgflow.models.model import build_model

    cfg = from_dict({"model": {"backbone": backbone, "hidden": hidden, "head": head},
                     "task": {"tasks": ["phase", "tools", "anticipation"]}})
    torch.manual_seed(0)
    model = build_model(cfg, 7, 7, 5, size=size).eval()
    meta = {"phase_names": CHOLEC80_PHASES, "tool_names": CHOLEC80_TOOLS,
            "instruments": ANTICIPATION_INSTRUMENTS, "horizon": 3.0, "fps": 1.0, "size": list(size),
            "preprocess": model.preprocess, "causal": model.is_causal}
    return model, meta


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="test_convnext")
    ap.add_argument("--size", default="112x64", help="W x H")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--head", default="lstm")
    ap.add_argument("--frames", type=int, default=3000, help="the late frame to time")
    ap.add_argument("--window", type=int, default=64, help="sliding-window length")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--fast-forward", action="store_true",
                    help="advance the state to --frames with the temporal head only")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    size = (h, w)

    from surgflow.online.predictor import OnlinePredictor

    model, meta = build(args.backbone, size, args.hidden, args.head)
    pred = OnlinePredictor(model, meta, device=args.device)
    dev = pred.device
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(args.repeats + 16, 1, 1, 3, *size, generator=g).to(dev)  # [n, 1, 1, 3, H, W]

    print(f"# bench_online: {args.backbone} {w}x{h} + {args.head}({args.hidden}), device {dev}, "
          f"torch threads {args.threads}, torch {torch.__version__}", flush=True)
    # Two predictors on the same model: `late` is advanced to frame --frames, `early` to frame 10.
    # Their steps are then timed alternately, so load from other processes hits both alike.
    late = pred
    early = OnlinePredictor(model, meta, device=args.device)
    t_adv = time.perf_counter()
    if args.fast_forward:
        with torch.no_grad():
            feats = torch.randn(1, 1, model.feature_dim, device=dev)
            for _ in range(args.frames):
                _, late.state = model.temporal(feats, late.state, None)
                late.frame_index += 1
    else:
        for i in range(args.frames):
            late.step_tensor(frames[i % len(frames)])
    adv_s = time.perf_counter() - t_adv
    for i in range(10):
        early.step_tensor(frames[i % len(frames)])
    t_early, t_late = [], []
    for i in range(args.repeats):
        for p, ts in ((early, t_early), (late, t_late)):
            t0 = time.perf_counter()
            p.step_tensor(frames[i])
            sync()
            ts.append(time.perf_counter() - t0)
    early_s, late_s = statistics.median(t_early), statistics.median(t_late)
    late_index = args.frames

    # Sliding window: re-run the last `window` frames each frame, no carried state.
    win = torch.rand(1, args.window, 3, *size, generator=g).to(dev)

    def window_step():
        with torch.no_grad():
            model.decode(model(win, None, None)[0])
        sync()

    window_step()  # warm-up
    window = timed(window_step, max(3, args.repeats // 4))

    # onnxruntime vs PyTorch on the exported one-frame step.
    ort_ms = None
    if dev.type == "cpu":
        import onnxruntime as ort

        from surgflow.online.export import export_onnx

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "step.onnx")
            info = export_onnx(model, meta, path, verify_frames=100, log=lambda m: None)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            state = {s["input"]: np.zeros(s["shape"], np.float32) for s in info["state"]}
            x = frames[0, 0].cpu().numpy()
            n_out = len(info["outputs"])

            def ort_step():
                res = sess.run(None, {"frame": x, **state})
                for s, v in zip(info["state"], res[n_out:]):
                    state[s["input"]] = v

            def torch_step():
                early.step_tensor(frames[0])

            for _ in range(3):
                ort_step()
                torch_step()
            t_ort, t_torch = [], []
            for _ in range(args.repeats):  # alternate, as above
                for fn, ts in ((ort_step, t_ort), (torch_step, t_torch)):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
            ort_ms = statistics.median(t_ort) * 1e3
            torch_ms = statistics.median(t_torch) * 1e3
            parity = info["parity"]["max_abs_diff"]

    rows = [
        ("frame 10 latency (ms)", f"{early_s * 1e3:.2f}"),
        (f"frame {late_index} latency (ms)", f"{late_s * 1e3:.2f}"),
        (f"ratio frame {late_index} / frame 10 (target <= 1.2)", f"{late_s / early_s:.3f}"),
        (f"ratio of the fastest frames (robust to load)", f"{min(t_late) / min(t_early):.3f}"),
        (f"{args.window}-frame sliding window per frame (ms)", f"{window * 1e3:.2f}"),
        ("ratio sliding window / streaming step", f"{window / early_s:.1f}x"),
    ]
    if ort_ms is not None:
        rows += [
            ("PyTorch step (ms)", f"{torch_ms:.2f}"),
            ("onnxruntime step (ms)", f"{ort_ms:.2f}"),
            ("ratio onnxruntime / PyTorch", f"{ort_ms / torch_ms:.2f}"),
            ("ONNX parity, 100 streamed frames (max abs diff)", f"{parity:.2e}"),
        ]
    wid = max(len(r[0]) for r in rows)
    print(f"{'metric':<{wid}}  value")
    for k, v in rows:
        print(f"{k:<{wid}}  {v}")
    print(f"(advanced {args.frames} frames in {adv_s:.1f} s"
          f"{' through the temporal head only' if args.fast_forward else ' through the full model'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
