"""Checkpoints: tensors and primitives only, written atomically, loaded with weights_only=True.

A checkpoint dict (docs/ARCHITECTURE.md, "Runs and checkpoints"):
  config (dict), model (state dict), optimizer (state dict), epoch, step, step_in_epoch,
  rng, meta {phase_names, tool_names, instruments, horizon, fps, size, preprocess,
  dataset_root, split, causal}, best.
Extension (resume): `carry` (per rank: the carried temporal state at save time, or None),
`strategy` (state dict of strategy-owned modules, e.g. the two-stage frame classifier),
`world_size`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from surgflow.io_utils import SurgflowError, atomic_torch_save

# Keys that may change between an interrupted run and its --resume.
RESUME_MUTABLE = {
    "train.max_steps", "train.epochs", "train.checkpoint_every", "train.log_every", "train.val_every",
    "data.workers", "data.root", "train.device",
}


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    atomic_torch_save(path, ckpt)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise SurgflowError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, pickle with objects, not a torch file
        raise SurgflowError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                            "it may be truncated or not a surgflow checkpoint") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise SurgflowError(f"checkpoint {path} is not a surgflow checkpoint (no 'model'/'config')")
    return ckpt


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, current: dict, ignore=RESUME_MUTABLE) -> list[str]:
    """Human-readable `key: saved vs current` lines for keys that differ."""
    a, b = flatten(saved), flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb:
            diffs.append(f"{key}: {va!r} (checkpoint) vs {vb!r} (now)")
    return diffs


def resolve_checkpoint_path(path_or_run_dir: str | Path, which: str = "best") -> Path:
    p = Path(path_or_run_dir)
    if p.is_dir():
        if which in ("best", "last"):
            cand = p / "checkpoints" / f"{which}.pt"
            if not cand.is_file() and which == "best" and (p / "checkpoints" / "last.pt").is_file():
                cand = p / "checkpoints" / "last.pt"
        else:
            cand = Path(which) if Path(which).is_absolute() or Path(which).is_file() else p / which
        if not cand.is_file():
            raise SurgflowError(f"{p}: no checkpoint '{which}' (looked for {cand}); "
                                "is this a surgflow run directory?")
        return cand
    if p.is_file():
        return p
    raise SurgflowError(f"{p}: neither a run directory nor a checkpoint file")


def load_model(path_or_run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"):
    """(model.eval(), cfg, RunMeta) from a run directory (which: best | last | a path) or a .pt file."""
    from surgflow.config import ConfigError, from_dict
    from surgflow.models.model import build_model
    from surgflow.run_meta import RunMeta

    path = resolve_checkpoint_path(path_or_run_dir, which)
    ckpt = load_checkpoint(path)
    try:
        cfg = from_dict(ckpt["config"])
    except ConfigError as e:
        raise SurgflowError(f"checkpoint {path}: its config is incompatible with this surgflow "
                            f"version: {e}") from None
    raw = ckpt.get("meta") or {}
    meta = RunMeta.from_dict(raw, cfg, where=f"checkpoint {path}")  # the label vocabularies
    model = build_model(cfg, num_phases=len(meta.phase_names), num_tools=len(meta.tool_names),
                        num_instruments=len(meta.instruments),
                        load_pretrained=False)  # the checkpoint holds the weights: no hub, no file
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise SurgflowError(
            f"checkpoint {path}: weights do not match the model built from its config "
            f"(missing: {', '.join(missing[:5]) or '-'}; unexpected: {', '.join(unexpected[:5]) or '-'})")
    model.to(device)
    # again with the model: an older meta's missing preprocess/size/causal come from the model
    return model.eval(), cfg, RunMeta.from_dict(raw, cfg, model, where=f"checkpoint {path}")


def carried_to_cpu(state: Optional[Any]) -> Optional[Any]:
    """A carried temporal state (nested tuples/lists of tensors) as lists of CPU tensors."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, (tuple, list)):
        return [carried_to_cpu(s) for s in state]
    if isinstance(state, dict):
        return {k: carried_to_cpu(v) for k, v in state.items()}
    return state


def carried_to_device(state: Optional[Any], device) -> Optional[Any]:
    """carried_to_cpu's output back on `device`, lists as tuples (head states are tuples)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, list):
        return tuple(carried_to_device(s, device) for s in state)
    if isinstance(state, dict):
        return {k: carried_to_device(v, device) for k, v in state.items()}
    return state
