"""`surgflow demo`: the paper's story on built-in synthetic data, in minutes on a CPU.

Synthesize a Cholec80-layout dataset (160x90 video), prepare it (1 fps, 112x64), train a BN-free
CNN-LSTM and its BatchNorm twin end to end with carried state (phase + anticipation) for several
seeds, evaluate every run honestly (eval mode) and the BN runs also in train mode ("cheat"), audit
both models, and write report.md / report.html (demo_report.py) with mean ± std over seeds and the
paired per-seed differences.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from surgflow.config import from_dict, load_config, to_dict
from surgflow.data.prepare import prepare_dataset
from surgflow.data.synth import synthesize
from surgflow.evaluation.runner import evaluate_run
from surgflow.evaluation.score import score_anticipation
# the definitions the report shares live there: demo imports demo_report, never the reverse
from surgflow.experiments.demo_report import MODELS, PRESET, ROWS, row_title, write_report  # noqa: F401
from surgflow.io_utils import SurgflowError, atomic_write_json, atomic_write_text, heartbeat
from surgflow.parallel import run_in_processes
from surgflow.runs import load_model

DEMO_MARKER = ".surgflow-demo"


@dataclass(frozen=True)
class DemoSettings:
    train_videos: int
    val_videos: int
    test_videos: int
    min_seconds: int
    max_seconds: int
    size: tuple[int, int]  # prepared (H, W), from 160x90 (16:9) video
    backbone: str
    seq_len: int
    lanes: int
    epochs: int
    horizon: float  # minutes
    seeds: int
    pretrained: str = ""  # a weights file for both models (e.g. offline_weights.timm_weights_file)
    # `surgflow synth` variation (data/synth.py PROFILES): the conclusion is drawn on data with
    # real laparoscopy's appearance variation, not on the clean generator the recipe was tuned on
    profile: str = "realistic"

    @property
    def videos(self) -> int:
        return self.train_videos + self.val_videos + self.test_videos


# Both models share one small ResNet: BatchNorm (native) vs the same network with every BatchNorm
# replaced by GroupNorm (BN-free, like the paper's ResNet-50-GN). From-scratch ConvNeXts start too
# slowly (layer-scale init 1e-6) for a CPU demo of minutes.
FULL = DemoSettings(train_videos=8, val_videos=2, test_videos=6, min_seconds=50, max_seconds=80,
                    size=(64, 112), backbone="test_resnet", seq_len=16, lanes=1, epochs=20,
                    horizon=1.0, seeds=3)
QUICK = DemoSettings(train_videos=3, val_videos=1, test_videos=2, min_seconds=24, max_seconds=30,
                     size=(36, 64), backbone="test_resnet", seq_len=16, lanes=1, epochs=2,
                     horizon=0.5, seeds=2)


def check_out_dir(out: Path) -> None:
    """Refuse a directory holding something other than an earlier demo rather than overwrite it."""
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARKER).exists():
        raise SurgflowError(
            f"{out} already holds files that are not from `surgflow demo`; "
            "pass --out with an empty or new directory"
        )


def _raw_matches(raw: Path, s: DemoSettings, seed: int) -> bool:
    """An earlier demo's raw videos are reused only when synth.json records this demo's data."""
    try:
        rec = json.loads((raw / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    return (len(list((raw / "videos").glob("*.mp4"))) == s.videos and rec.get("seed") == seed
            and rec.get("videos") == s.videos and rec.get("profile", {}).get("name") == s.profile
            and (rec.get("min_seconds"), rec.get("max_seconds")) == (s.min_seconds, s.max_seconds))


def _stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _train_config(s: DemoSettings, root: Path, split: Path, norm: str, name: str, seed: int) -> dict:
    """The preset's training recipe (optimiser, lr, schedule, weight decay) with the demo's data,
    tasks, norm, seed and epoch budget."""
    train = to_dict(load_config(PRESET))["train"]
    train.update(strategy="carry_hidden", seq_len=s.seq_len, batch_size=s.lanes, epochs=s.epochs,
                 seed=seed, best_metric="val/accuracy", device="cpu", log_every=10, max_steps=0)
    return {
        "name": name,
        "data": {"root": str(root), "split": str(split), "augment": True},
        "model": {"backbone": s.backbone, "norm": norm, "pretrained": s.pretrained or False,
                  "head": "lstm", "hidden": 64},
        "task": {"tasks": ["phase", "anticipation"], "horizon": s.horizon},
        "train": train,
    }


def _summarise(ev: dict) -> dict:
    """What the report needs from one evaluate_run result (small and picklable)."""
    ph, an, preds = ev["phase"], ev["anticipation"], ev["preds"]
    instruments, horizon = an["protocol"]["instruments"], float(an["protocol"]["horizon"])
    per_video = {}
    for v, rec in preds.items():
        one = score_anticipation({v: rec["gt_anticipation"]}, {v: rec["anticipation_min"]},
                                 instruments, horizon)["mean"]
        per_video[v] = {"accuracy": ph["per_video"][v]["accuracy"], "wMAE": one["wMAE"],
                        "frames": int(len(rec["gt_phase"]))}
    return {"video": {m: ph["video"][m]["mean"] for m in ("accuracy", "precision", "recall", "jaccard", "f1")},
            "anticipation": {m: an["mean"][m] for m in ("inMAE", "outMAE", "wMAE")},
            "per_video": per_video, "confusion": ph["confusion"], "phase_names": ph["protocol"]["phases"],
            "instruments": instruments, "horizon": horizon,
            "preds": {v: {k: rec[k] for k in ("gt_phase", "phase", "gt_anticipation", "anticipation_min")}
                      for v, rec in preds.items()}}


def _job(out: str, s: DemoSettings, key: str, seed: int, prepared: str, split: str,
         threads: Optional[int], quiet: bool) -> dict:
    """Train one (model, seed) and evaluate it on the test videos; in-process or in a spawned worker
    (quiet: the trainer's log goes to the run's log.txt only)."""
    import torch  # heavy: torch, only where a job runs

    from surgflow.training.trainer import train  # heavy: torch, timm

    if threads:
        torch.set_num_threads(int(threads))
    out_p = Path(out)
    run_dir = out_p / "runs" / f"{key}_seed{seed}"
    cfg = from_dict(_train_config(s, Path(prepared), Path(split), MODELS[key][0], key, seed))
    sink = io.StringIO()
    with contextlib.ExitStack() as stack:
        if quiet:
            os.environ["SURGFLOW_NO_PROGRESS"] = "1"
            stack.enter_context(contextlib.redirect_stderr(sink))
            stack.enter_context(contextlib.redirect_stdout(sink))
        result = train(cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").exists())
        evals = {}
        for row, (k, cheat, _) in ROWS.items():
            if k == key:
                ev = evaluate_run(run_dir, split="test", checkpoint="kept", cheat=cheat,
                                  out=out_p / "eval" / f"{row}_seed{seed}", plots=False, quiet=True)
                evals[row] = _summarise(ev)
    return {"key": key, "seed": seed, "run_dir": str(run_dir), "train": result, "evals": evals}


def _run_jobs(jobs: list[tuple], workers: int) -> list[dict]:
    t0 = time.perf_counter()
    done: list[dict] = []

    def report(res: dict) -> None:
        done.append(res)
        accs = ", ".join(f"{ROWS[r][2]} accuracy {e['video']['accuracy']:.1f}%, wMAE "
                         f"{e['anticipation']['wMAE']:.3f} min" for r, e in res["evals"].items())
        print(f"[{len(done)}/{len(jobs)}] {MODELS[res['key']][1]} seed {res['seed']}: {accs} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    if workers <= 1:
        for j in jobs:
            print(f"training {MODELS[j[2]][1]} seed {j[3]}", flush=True)
            report(_job(*j, quiet=False))
    else:
        for res in run_in_processes(_job, jobs, workers, quiet=True):
            report(res)
    return sorted(done, key=lambda r: (list(MODELS).index(r["key"]), r["seed"]))


def run_demo(out: str | Path = "surgflow_demo", quick: bool = False, seed: int = 0,
             seeds: Optional[int] = None, workers: Optional[int] = None,
             settings: Optional[DemoSettings] = None) -> Path:
    import torch  # heavy: torch, only where a job runs

    from surgflow.audit.audit import audit_model  # heavy: torch

    s = settings or (QUICK if quick else FULL)
    n_seeds = int(seeds or s.seeds)
    if n_seeds < 1:
        raise SurgflowError(f"--seeds must be >= 1, got {n_seeds}")
    if workers is None:  # one training per core, one torch thread each (tiny models)
        workers = 1 if quick else max(1, min(2, os.cpu_count() or 1))
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by surgflow demo\n")
    t0 = time.time()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = time.time() - t0 - sum(timings.values())

    _stage(f"1/5 synthesize {s.videos} surgery videos (Cholec80 layout, 160x90, profile {s.profile})")
    raw = out / "data" / "raw"
    if not _raw_matches(raw, s, seed):
        if raw.exists():
            shutil.rmtree(raw)
        synthesize(raw, videos=s.videos, seed=seed, width=160, height=90,
                   min_seconds=s.min_seconds, max_seconds=s.max_seconds, profile=s.profile)
    lap("synthesize")

    _stage(f"2/5 prepare: decode once at 1 fps, resize to {s.size[1]}x{s.size[0]}, align labels")
    prepared = out / "data" / "prepared"
    prepare_dataset("cholec80", raw, prepared, fps=1.0, size=s.size)
    names = [f"video{i:02d}" for i in range(1, s.videos + 1)]
    a, b = s.train_videos, s.train_videos + s.val_videos
    split = out / "data" / "split.json"
    atomic_write_json(split, {"train": names[:a], "val": names[a:b], "test": names[b:]})
    lap("prepare")

    _stage(f"3/5 train {len(MODELS)} models x {n_seeds} seeds end to end (carried state), "
           f"{workers} at a time; then evaluate each on {s.test_videos} held-out test videos")
    threads = 1 if workers > 1 else None
    jobs = [(str(out), s, key, seed + k, str(prepared), str(split), threads)
            for key in MODELS for k in range(n_seeds)]
    old_threads = torch.get_num_threads()
    try:
        results = _run_jobs(jobs, workers)
    finally:
        torch.set_num_threads(old_threads)
    lap("train + evaluate")

    _stage("4/5 audit both models (first seed) for BatchNorm leakage")
    audits = {}
    for key in MODELS:
        run_dir = next(r["run_dir"] for r in results if r["key"] == key)
        model, _, _ = load_model(run_dir, which="kept", device="cpu")
        with heartbeat(f"audit {key}"):
            audits[key] = audit_model(model)
        atomic_write_json(out / "audit" / f"{key}.json", audits[key].to_dict())
    lap("audit")

    _stage("5/5 report")
    timings["total"] = time.time() - t0
    md = write_report(out, s, results, audits, timings, quick, n_seeds, workers, split)
    lap("report")
    timings["total"] = time.time() - t0
    print(f"\nDemo finished in {timings['total']:.0f} s. Read {md} (or {md.with_suffix('.html')})")
    atomic_write_text(out / "settings.json", __import__("json").dumps(asdict(s), indent=1) + "\n")
    sys.stdout.flush()
    return md
