"""The Python API behind `import surgflow` (names resolved lazily by surgflow/__init__.py, so
`import surgflow` stays light: no torch until a name is used).

Each function is the library call a command makes, with the same defaults; see README "Python API".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from surgflow.audit.targets import audit as _audit
from surgflow.cli_args import parse_size, resolve_device
from surgflow.config import Config, from_dict, to_dict
from surgflow.config import load_config as _load_config
from surgflow.data.prepare import prepare as _prepare
from surgflow.data.synth import synthesize as _synth
from surgflow.evaluation.runner import evaluate_run
from surgflow.runs import load_model as _load_model


def load_model(run_or_checkpoint: Union[str, Path], checkpoint: str = "kept", device: str = "cpu"):
    """(model in eval mode, Config, meta dict) from a run directory or a checkpoint .pt file;
    checkpoint: kept (the run's train.keep) | best | last | a checkpoint path inside the run. Loads with weights_only=True."""
    return _load_model(run_or_checkpoint, which=checkpoint, device=resolve_device(device))


def load_config(config: Union[str, Path, None] = None, overrides: Optional[Sequence[str]] = None):
    """Config from a preset name or YAML file (`extends` applied) and dotted overrides."""
    return _load_config(config, list(overrides or []))


def train(config: Any, out_dir: Union[str, Path], overrides: Optional[Sequence[str]] = None,
          resume: bool = False) -> dict:
    """Train end to end. config: a preset name, a YAML path, a Config or a dict of sections.
    Returns {run_dir, last, best, epoch, step, stopped, train, val, best_metric}."""
    from surgflow.training.trainer import train as _train  # heavy: torch (`import surgflow` stays light)

    if isinstance(config, Config):
        cfg = from_dict(to_dict(config), list(overrides or []))
    elif isinstance(config, dict):
        cfg = from_dict(config, list(overrides or []))
    else:
        cfg = load_config(config, overrides)
    return _train(cfg, out_dir, resume=resume)


def evaluate(run_or_checkpoint: Union[str, Path], split: str = "test", checkpoint: str = "kept",
             device: str = "cpu", out: Union[str, Path, None] = None, **kwargs) -> dict:
    """`surgflow eval` as a call: the model over whole videos of the run's split subset, causally,
    scored. Returns {"scores": {task: result}, "phase": ..., "json": path, "predictions": dir, ...}.
    Other keyword arguments (cheat, chunk, relaxed, plots, quiet) as in evaluate_run."""
    return evaluate_run(run_or_checkpoint, split=split, checkpoint=checkpoint,
                        device=resolve_device(device), out=out, **kwargs)


def audit(target: Any, input_shape: Optional[Sequence[int]] = None,
          modes: Sequence[str] = ("train", "eval"), seed: int = 0, checkpoint: str = "kept"):
    """BatchNorm-leakage audit of a model (torch module), a run directory / checkpoint, or a
    preset/YAML config (built with random weights: the leaks are structural). Returns an
    AuditReport (.leaks, .findings, .format(), .to_dict())."""
    return _audit(target, input_shape=input_shape, modes=modes, seed=seed, checkpoint=checkpoint)


def synthesize(out: Union[str, Path], videos: int = 12, seed: int = 0, size: str = "320x180",
               min_seconds: float = 60.0, max_seconds: float = 180.0, workers: Optional[int] = 1,
               profile: str = "clean"):
    """Synthetic surgeries in the Cholec80 layout (`surgflow synth`); size is WIDTHxHEIGHT;
    profile: clean | realistic | hard, the label-independent variation (data/synth.py PROFILES)."""
    h, w = parse_size(size, even=True, minimum=16)
    return _synth(out, videos=videos, seed=seed, width=w, height=h, min_seconds=min_seconds,
                  max_seconds=max_seconds, workers=workers, profile=profile)


def prepare(layout: str, raw_root: Union[str, Path], out: Union[str, Path], fps: float = 1.0,
            size: str = "384x216", workers: int = 1, **kwargs):
    """Decode a raw dataset once into a prepared frame store (`surgflow prepare`); size is
    WIDTHxHEIGHT. Returns the PrepareResult (.done, .skipped, .failed, .manifest)."""
    return _prepare(layout, raw_root, out, fps=fps, size=parse_size(size, even=True, minimum=8),
                    workers=workers, **kwargs)
