"""`surgflow experiment cheating`: the BN-pitfalls paper's "cheating" effect on synthetic data.

Setup (docs/DOMAIN.md section 2.3): instrument anticipation, trained end to end with carried LSTM state
(strategy carry_hidden: each batch holds T consecutive frames of ONE video, the condition under
which BatchNorm's batch statistics leak the future) with the same small backbone in 3 variants:

    bn          BatchNorm as built (batch statistics in train mode)
    frozen_bn   the same BatchNorm layers with frozen (running) statistics
    bn_free     the same backbone with GroupNorm instead of BatchNorm

Evaluated on held-out videos with the real evaluator (surgflow.evaluation.runner.evaluate_run):
every variant in eval mode (causal, honest) and the BN model also in train mode ("cheat",
NON-CAUSAL: each chunk of T frames is normalised with its own statistics, future frames included).
The table reports inMAE / outMAE / wMAE (minutes, frame-pooled per instrument, mean over
instruments) as mean and std over training seeds; the conclusion is worded from the numbers.
The dataset is synthesized once from a fixed seed and shared by all training seeds; nothing in it
is tuned to produce an outcome.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from surgflow.config import from_dict
from surgflow.data.prepare import prepare
from surgflow.data.store import PreparedDataset
from surgflow.data.synth import synthesize
from surgflow.evaluation.runner import evaluate_run
from surgflow.evaluation.score import anticipation_baselines
from surgflow.experiments import report as rep
# the definitions the report shares live there: cheating imports cheating_report, never the reverse
from surgflow.experiments.cheating_report import (ROWS, VARIANTS, CheatingSetup, baseline_rows,
                                                  conclusion, instruments, markdown_report,
                                                  paired_rows, plot_loss_curves, seed_summary)
from surgflow.io_utils import SurgflowError, atomic_torch_save, atomic_write_json, atomic_write_text
from surgflow.parallel import run_in_processes

METRICS = ("inMAE", "outMAE", "wMAE")


QUICK = CheatingSetup(videos=4, train_videos=3, min_seconds=30.0, max_seconds=36.0,
                      raw_size=(36, 64), size=(32, 56), horizon=0.5, seq_len=16, epochs=2,
                      hidden=32, warmup_steps=0)



def _log(msg: str) -> None:
    print(f"[cheating] {msg}", file=sys.stderr, flush=True)


def trivial_baselines(prepared: Path, train: list[str], test: list[str], horizon: float) -> dict:
    """inMAE/outMAE/wMAE (min) on the test videos of the predictions that read no frames
    (evaluation.score.anticipation_baselines: constant h, train mean, per-phase prior)."""
    ds, inst = PreparedDataset(prepared), instruments()
    gt = {v: ds.anticipation(v, horizon, inst) for v in train + test}
    phases = {v: ds.phase(v) for v in train + test}
    return {k: {metric: float(m[metric]) for metric in METRICS}
            for k, m in anticipation_baselines(gt, train, test, inst, horizon, phases).items()}


# --------------------------------------------------------------------------- data
def _prepare_data(out: Path, s: CheatingSetup) -> tuple[Path, Path, list[str], list[str]]:
    """Synthesize and prepare once; returns (prepared root, split file, train, test videos)."""
    raw, prepared = out / "data" / "raw", out / "data" / "prepared"
    names = [f"video{i:02d}" for i in range(1, s.videos + 1)]
    if not all((raw / "videos" / f"{n}.mp4").is_file() for n in names):
        _log(f"synthesizing {s.videos} videos ({s.min_seconds:g}-{s.max_seconds:g} s) into {raw}")
        synthesize(raw, videos=s.videos, seed=s.data_seed, width=s.raw_size[1], height=s.raw_size[0],
                   min_seconds=s.min_seconds, max_seconds=s.max_seconds)
    _log(f"preparing at {s.fps:g} fps, {s.size[1]}x{s.size[0]} (WxH) into {prepared}")
    res = prepare("cholec80", raw, prepared, fps=s.fps, size=tuple(s.size), workers=1)
    if res.failed:
        raise SurgflowError(f"preparing the synthetic data failed: {res.failed}")
    train, test = names[:s.train_videos], names[s.train_videos:]
    split = out / "data" / "split.yaml"
    atomic_write_text(split, json.dumps({"train": train, "val": [], "test": test}) + "\n")
    return prepared, split, train, test


def instrument_uses(prepared: Path) -> dict[str, float]:
    """Mean number of uses (onsets at 1 fps) per video of each anticipated instrument."""
    ds = PreparedDataset(prepared)
    counts: dict[str, list[int]] = {i: [] for i in instruments()}
    for v in ds.videos:
        tools = ds.tools(v)
        for name in counts:
            on = tools[:, ds.tool_names.index(name)] > 0.5
            counts[name].append(int((on & ~np.concatenate([[False], on[:-1]])).sum()))
    return {k: float(np.mean(c)) for k, c in counts.items()}


def _init_weights(out: Path, s: CheatingSetup, seed: int, prepared: Path, split: Path) -> Path:
    """Random initial backbone weights for `seed`, shared by the 3 variants, with BatchNorm
    running statistics estimated on the training frames (one pass in train mode).

    Without pretraining, frozen_bn would otherwise freeze the initial statistics (mean 0, var 1),
    i.e. not normalise at all; the paper freezes ImageNet statistics. The calibration gives frozen
    BN real statistics without looking at test videos; GroupNorm ignores them and native BN
    re-estimates them during training."""
    import timm  # heavy: timm; `surgflow experiment --help` imports this module
    import torch  # heavy: torch, only where a job runs

    from surgflow.models.backbones import IMAGENET_MEAN, IMAGENET_STD  # heavy: torch

    if s.pretrained:  # the same ImageNet weights (and statistics) for every seed and variant
        from surgflow.models.offline_weights import SOURCES, timm_weights_file  # heavy: torch

        if s.pretrained in SOURCES and SOURCES[s.pretrained].timm_name != s.backbone:
            raise SurgflowError(f"pretrained '{s.pretrained}' is for backbone "
                                f"{SOURCES[s.pretrained].timm_name}, not {s.backbone}")
        return timm_weights_file(s.pretrained, out / "init")
    path = out / "init" / f"{s.backbone}_seed{seed}.pth"
    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = timm.create_model(s.backbone, pretrained=False, num_classes=0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all calibration batches
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", IMAGENET_STD)).view(1, 3, 1, 1)
    ds = PreparedDataset(prepared, split=str(split)).subset("train")
    model.train()
    with torch.no_grad():
        for v in ds.videos:
            n = ds.num_frames(v)
            for a in range(0, n, s.seq_len):  # batches like training: T consecutive frames
                x = torch.from_numpy(ds.read_frames(v, a, min(n, a + s.seq_len)))
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                if len(x) > 1:
                    model((x - mean) / std)
    for m in bns:
        m.momentum = 0.1
    atomic_torch_save(path, model.state_dict())
    return path


def _config(s: CheatingSetup, variant: str, seed: int, prepared: Path, split: Path, device: str,
            init: Optional[Path] = None):
    norm = VARIANTS[variant][0]
    return from_dict({
        "name": f"cheating-{variant}-seed{seed}",
        "data": {"root": str(prepared), "split": str(split), "val_subset": "",
                 "augment": s.augment},
        "model": {"backbone": s.backbone, "norm": norm,
                  "pretrained": str(init) if init else False, "head": s.head,
                  "hidden": s.hidden},
        "task": {"tasks": ["anticipation"], "online": True, "horizon": s.horizon},
        "train": {"strategy": "carry_hidden", "seq_len": s.seq_len, "batch_size": 1,
                  "epochs": s.epochs, "lr": s.lr, "warmup_steps": s.warmup_steps,
                  "device": device, "seed": seed, "log_every": 1, "best_metric": "val/wMAE"},
    })


def _train(cfg, run_dir: Path) -> None:
    from surgflow.training.trainer import train  # heavy: torch, timm

    last = run_dir / "checkpoints" / "last.pt"
    # an existing run of the same config is resumed (finished runs return at once)
    train(cfg, run_dir, resume=last.exists())


def _loss_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(epoch, mean training loss of that epoch) from the trainer's metrics.csv."""
    return rep.curve(run_dir, "train/loss")


def _job(out: str, s: CheatingSetup, variant: str, seed: int, prepared: str, split: str,
         device: str, threads: Optional[int], quiet: bool) -> dict:
    """Train one (seed, variant) and evaluate it: {"curve": [(step, loss)], "evals": {row: {...}}}.
    Runs in the calling process or in a spawned worker (quiet: the trainer's log goes to the
    run's log.txt only)."""
    import torch  # heavy: torch, only where a job runs

    if threads and str(device) == "cpu":
        torch.set_num_threads(int(threads))
    out_p = Path(out)
    run_dir = out_p / "runs" / f"seed{seed}" / variant
    init = (_init_weights(out_p, s, seed, Path(prepared), Path(split))
            if s.calibrate_init or s.pretrained else None)
    cfg = _config(s, variant, seed, Path(prepared), Path(split), device, init)
    sink = io.StringIO()
    with contextlib.ExitStack() as stack:
        if quiet:  # the trainer writes everything to run_dir/log.txt as well
            os.environ["SURGFLOW_NO_PROGRESS"] = "1"
            stack.enter_context(contextlib.redirect_stderr(sink))
            stack.enter_context(contextlib.redirect_stdout(sink))
        _train(cfg, run_dir)
        evals = {}
        for row, (rv, cheat, _label) in ROWS.items():
            if rv != variant:
                continue
            ev = evaluate_run(run_dir, split="test", checkpoint="last", cheat=cheat,
                              out=out_p / "eval" / f"seed{seed}" / row, device=device,
                              plots=False, quiet=True)
            mean = ev["scores"]["anticipation"]["mean"]
            evals[row] = {"run_dir": str(run_dir), "eval": ev["json"],
                          **{m: float(mean[m]) for m in METRICS}}
    return {"seed": seed, "variant": variant, "run_dir": str(run_dir), "curve": _loss_curve(run_dir),
            "evals": evals}


def run_cheating_experiment(out, seeds: int = 5, quick: bool = False, device: str = "cpu",
                            setup: Optional[CheatingSetup] = None, workers: Optional[int] = None,
                            threads: Optional[int] = 1) -> dict:
    """Run the experiment into `out`; returns the JSON written to OUT/cheating.json
    ({"setup", "seeds", "rows": {row: {label, NON-CAUSAL, inMAE/outMAE/wMAE: {mean, std,
    values}}}, "final_train_loss", "conclusion", "runs", "files", "wall_seconds"}).

    workers: trainings run in parallel in that many spawned processes (default: 1 for --quick or
    a GPU, else min(2, CPU count)); threads: torch CPU threads per training (default 1: the models
    are tiny, and on a busy machine OpenMP oversubscription slowed them 15x in our measurement)."""
    import torch  # heavy: torch, only where a job runs

    t0 = time.perf_counter()
    if seeds < 1:
        raise SurgflowError(f"--seeds must be >= 1, got {seeds}")
    s = setup or (QUICK if quick else CheatingSetup())
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if workers is None:
        workers = 1 if (quick or str(device) != "cpu") else min(2, os.cpu_count() or 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup_file = out / "setup.json"
    if setup_file.is_file():
        old = json.loads(setup_file.read_text())
        if old != json.loads(json.dumps(asdict(s))):
            raise SurgflowError(f"{out} holds a cheating experiment with another setup "
                                f"({setup_file}); choose another --out or delete it")
    atomic_write_json(setup_file, asdict(s))
    prepared, split, train_v, test_v = _prepare_data(out, s)

    seed_list = list(range(seeds))
    jobs = [(str(out), s, variant, seed, str(prepared), str(split), device, threads)
            for seed in seed_list for variant in VARIANTS]
    _log(f"{len(jobs)} trainings ({seeds} seed(s) x {len(VARIANTS)} variants, {s.epochs} epochs "
         f"each) on {device}, {workers} at a time; logs in {out / 'runs'}/seed*/*/log.txt")
    done: list[dict] = []

    def report(res: dict) -> None:
        done.append(res)
        for row, e in res["evals"].items():
            _log(f"[{len(done)}/{len(jobs)}] seed {res['seed']}: {ROWS[row][2]}: "
                 + ", ".join(f"{m} {e[m]:.3f}" for m in METRICS)
                 + f" ({time.perf_counter() - t0:.0f} s)")

    if workers <= 1:
        old_threads = torch.get_num_threads()
        try:
            for j in jobs:
                _log(f"training seed {j[3]} {j[2]} ({s.backbone}, norm {VARIANTS[j[2]][0]})")
                report(_job(*j, quiet=False))
        finally:
            torch.set_num_threads(old_threads)
    else:
        for res in run_in_processes(_job, jobs, workers, quiet=True):
            report(res)

    results: dict[str, dict[str, list]] = {k: {m: [] for m in METRICS} for k in ROWS}
    run_dirs: dict[str, list] = {v: [] for v in VARIANTS}
    final_loss: dict[str, list] = {v: [] for v in VARIANTS}
    runs: dict[str, dict] = {}
    for res in sorted(done, key=lambda r: (r["seed"], list(VARIANTS).index(r["variant"]))):
        curve = res["curve"]
        run_dirs[res["variant"]].append(res["run_dir"])
        if curve:
            final_loss[res["variant"]].append(curve[-1][1])
        for row, e in res["evals"].items():
            for m in METRICS:
                results[row][m].append(e[m])
            runs.setdefault(f"seed{res['seed']}", {})[row] = e

    rows = {k: {m: seed_summary(results[k][m]) for m in METRICS} for k in ROWS}
    train_loss = {v: seed_summary(final_loss[v]) for v in VARIANTS if final_loss[v]}
    concl = conclusion(rows, len(seed_list), train_loss)
    plot = plot_loss_curves(run_dirs, out / "loss_curves.png")
    wall = time.perf_counter() - t0
    command = (f"surgflow experiment cheating --seeds {seeds}{' --quick' if quick else ''} "
               f"--out {shlex.quote(str(out))}"
               + (f" --pretrained {s.pretrained}" if s.pretrained else "")
               + (f" --device {device}" if device != "cpu" else ""))
    runtime = f"{device}, {workers} training(s) in parallel, {threads or 'default'} torch thread(s) each"
    uses = instrument_uses(prepared)
    baselines = trivial_baselines(prepared, train_v, test_v, s.horizon)
    md = markdown_report(s, seed_list, rows, concl, wall, train_loss, test_v, train_v, plot,
                         command, runtime, uses, baselines)
    rep.write_markdown(out / "cheating.md", md, "surgflow: the BatchNorm cheating experiment")
    result = {
        "experiment": "cheating", "setup": asdict(s), "seeds": seed_list,
        "rows": {k: {"label": ROWS[k][2], "NON-CAUSAL": ROWS[k][1], **rows[k]} for k in ROWS},
        "final_train_loss": train_loss, "conclusion": concl, "runs": runs,
        "instrument_uses_per_video": uses, "baselines_no_frames": baselines,
        "paired_differences": {f"{a} - {b}: {m}": p for (a, b, m), p in paired_rows(rows).items()},
        "honest_vs_baselines": {f"{row} - {b}: wMAE": p
                                for (row, b), p in baseline_rows(rows, baselines).items()},
        "wall_seconds": wall, "device": device, "command": command, "runtime": runtime,
        "files": {"markdown": str(out / "cheating.md"), "json": str(out / "cheating.json"),
                  "plot": str(out / plot) if plot else None},
    }
    atomic_write_json(out / "cheating.json", result)  # NaN -> null (io_utils.json_safe)
    _log(f"done in {wall:.0f} s: {out / 'cheating.md'}")
    return result
