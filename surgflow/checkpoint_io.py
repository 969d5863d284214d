"""Checkpoint files: the one module that reads and writes them (and the only `torch.load` call).

Every .pt file surgflow reads goes through `weights_only_load` (torch.load with weights_only=True:
tensors and primitives, never pickled code), so a checkpoint written by a run, a weights file
given as model.pretrained, and a checkpoint read by eval, predict or export are loaded the same
way. A checkpoint is written atomically (io_utils.atomic_torch_save). Its contents are described in
docs/ARCHITECTURE.md ("Runs and checkpoints"); what a run puts in it is training/checkpoint.py's
business, what a reader makes of it (RunMeta, load_model) is runs.py's.

It sits low in the layering (it imports io_utils only), so models (pretrained weights), runs,
evaluation, online and training all read files through it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from surgflow.io_utils import SurgflowError, atomic_torch_save, atomic_write_bytes


def weights_only_load(path: str | Path, map_location="cpu", mmap: bool = False):
    """`torch.load` with weights_only=True; torch's own exceptions pass through (callers that
    read user files wrap them in their message)."""
    import torch  # heavy: runs and the viewer import this module without reading a file

    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    atomic_torch_save(path, ckpt)


def read_checkpoint_file(path: Path, mmap: bool, map_location="cpu"):
    """weights_only_load with a checkpoint's refusals: any failure (truncated or empty file, a
    pickled object weights_only refuses, not a torch file) is a SurgflowError naming the file."""
    if not path.is_file():
        raise SurgflowError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise SurgflowError(f"checkpoint {path} is empty (0 bytes): an interrupted write or copy")
    try:
        return weights_only_load(path, map_location=map_location, mmap=mmap)
    except Exception as e:  # truncated file, pickle with objects, not a torch file
        if "Weights only load failed" in str(e):  # torch's text goes on about unsafe loading
            why = ("it holds Python objects that a weights-only load refuses: not a checkpoint "
                   "surgflow wrote, or one edited since")
        else:
            why = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        raise SurgflowError(f"checkpoint {path} cannot be read ({why}); it may be truncated or not "
                            "a surgflow checkpoint") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint file as a dict (weights_only=True); SurgflowError when it cannot be read."""
    path = Path(path)
    ckpt = read_checkpoint_file(path, mmap=False, map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise SurgflowError(f"checkpoint {path} is not a surgflow checkpoint (no 'model'/'config')")
    return ckpt


def peek_checkpoint(path: str | Path) -> dict:
    """A checkpoint's dict memory-mapped (counters, meta, records without reading its tensors);
    the same refusals as load_checkpoint."""
    path = Path(path)
    ckpt = read_checkpoint_file(path, mmap=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise SurgflowError(f"checkpoint {path} is not a surgflow checkpoint (no 'model')")
    return ckpt


def checkpoint_counters(path: str | Path) -> dict:
    """A checkpoint's {step, epoch, step_in_epoch, best} without reading its tensors (mmap)."""
    ck = peek_checkpoint(path)
    best = ck.get("best")
    return {"step": ck.get("step"), "epoch": ck.get("epoch"), "step_in_epoch": ck.get("step_in_epoch"),
            "best": dict(best) if isinstance(best, dict) else {}}


def best_problem(ckpt_dir: str | Path) -> Optional[str]:
    """Why checkpoints/best.pt is not the best that last.pt records (None = it is). last.pt is
    written first and records the best; a kill before best.pt was (re)written leaves best.pt
    missing or older than that record."""
    ckpt_dir = Path(ckpt_dir)
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if not last.is_file():
        return None if best.is_file() else f"{ckpt_dir}: no checkpoint yet"
    try:
        rec = checkpoint_counters(last)["best"]
    except SurgflowError:  # an unreadable last.pt records nothing to check best.pt against;
        return None  # whoever reads last.pt itself refuses it with the reason
    if rec.get("step") is None:
        return None if best.is_file() else (f"{best} does not exist yet: no validation has run "
                                            f"(last.pt records no best)")
    if not best.is_file():
        return (f"{best} is missing although {last} records the best at step {rec['step']} "
                f"(its write was interrupted)")
    got = checkpoint_counters(best)["step"]
    if got != rec["step"]:
        return (f"{best} holds step {got}, but {last} records the best at step {rec['step']} (the "
                f"newer best's write was interrupted)")
    return None


def repair_best(ckpt_dir: str | Path, log=print) -> bool:
    """At the start of a resumed run: rewrite best.pt from last.pt when last.pt IS the recorded
    best (the only crash window: between the two writes). Returns True when best.pt is now
    consistent; False when the recorded best cannot be recovered (the caller resets it)."""
    ckpt_dir = Path(ckpt_dir)
    problem = best_problem(ckpt_dir)
    if problem is None or not (ckpt_dir / "last.pt").is_file():
        return True
    last = checkpoint_counters(ckpt_dir / "last.pt")
    if last["best"].get("step") is None:  # no validation yet (a resume inside the first epoch)
        return True
    if last["best"].get("step") == last["step"]:
        atomic_write_bytes(ckpt_dir / "best.pt", (ckpt_dir / "last.pt").read_bytes())
        log(f"{problem}: rewrote best.pt from last.pt (step {last['step']}, the recorded best)")
        return True
    log(f"WARNING: {problem}; it cannot be recovered: the next validation writes a new best.pt")
    return False
