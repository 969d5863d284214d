"""Training's side of checkpoints: what may change on --resume, and the carried state's transport.

The checkpoint file itself (save/load with weights_only=True, load_model, RunMeta) lives in
surgflow/runs.py, shared with evaluation and online prediction; it is re-exported here.
Extension (resume): `carry` (per rank: the carried temporal state at save time, or None),
`strategy` (state dict of strategy-owned modules, e.g. the two-stage frame classifier),
`world_size`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

# re-exported for training code and older imports; the file format's home is surgflow/runs.py
from surgflow.runs import (best_problem, load_checkpoint, load_model, peek_checkpoint,  # noqa: F401
                           repair_best, resolve_checkpoint_path, save_checkpoint, shape_mismatches)

# Keys that may change between an interrupted run and its --resume.
RESUME_MUTABLE = {
    "train.max_steps", "train.epochs", "train.checkpoint_every", "train.log_every", "train.val_every",
    "data.workers", "data.root", "train.device",
}


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, current: dict, ignore=RESUME_MUTABLE,
                       defaults: Optional[dict] = None) -> list[str]:
    """Human-readable `key: saved vs current` lines for keys that differ. A key the checkpoint's
    config lacks (written by a surgflow that did not know it) counts as its value in `defaults`
    (a config dict of the defaults): a new key's default keeps the old behaviour, so a run from
    before it resumes as long as the key keeps that default."""
    a, b = flatten(saved), flatten(current)
    d = flatten(defaults) if defaults is not None else {}
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        va, vb = a.get(key, d.get(key, "<absent>")), b.get(key, "<absent>")
        if va != vb:
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} (checkpoint) vs {vb!r} (now)")
    return diffs


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
