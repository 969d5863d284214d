"""A run's checkpoints (checkpoints/last.pt and best.pt): what they hold, when they are written,
how a run resumes, and what may change on --resume.

    checkpoints/last.pt   every train.checkpoint_every steps and at each epoch end (atomic)
    checkpoints/best.pt   best by train.best_metric on the validation subset

A checkpoint holds the state dict of every registered component (model, optimizer, lr scheduler,
the EMA weights), the run's TrainState (training/state.py: progress counters and best once, per
rank the RNG states, the strategy state with its carried LSTM/TCN state and the running epoch
statistics), so a resumed run continues bit for bit on CPU. The files are read and written by
surgflow/checkpoint_io.py (weights_only=True), the one module that touches checkpoint files.
The carried state's transport to and from the CPU is here too (strategies use it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch

from surgflow.checkpoint_io import load_checkpoint, peek_checkpoint, save_checkpoint
from surgflow.config import Config, to_dict
from surgflow.io_utils import SurgflowError
from surgflow.training.runtime import Runtime
from surgflow.training.state import PER_RANK_KEYS, SHARED_KEYS, TrainState

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


class CheckpointManager:
    def __init__(self, out: Path, cfg: Config, rt: Runtime, log: Callable[[str], None]):
        self.out, self.cfg, self.rt, self.log = Path(out), cfg, rt, log
        self.dir = self.out / "checkpoints"
        self.last_path, self.best_path = self.dir / "last.pt", self.dir / "best.pt"
        self.components: dict = {}  # name -> object with state_dict()/load_state_dict()
        self.state: Optional[TrainState] = None
        self.meta: dict = {}
        self.data: dict = {}  # {subset: {video: checksum}} of the videos trained and validated on

    def refuse_existing_run(self, resume: bool) -> None:
        if not resume and self.last_path.exists():
            raise SurgflowError(f"{self.out} already holds a run ({self.last_path}); pass --resume to "
                                f"continue it, or choose another --out")

    def track(self, state: TrainState, meta: dict, data: Optional[dict] = None,
              **components) -> None:
        """What goes into a checkpoint: `components` by name, the run's TrainState (its per-rank
        keys gathered from every rank), `meta` and `data` ({subset: {video: manifest checksum}}:
        a resume on re-prepared data is caught)."""
        self.state, self.meta = state, meta
        self.data = dict(data or {})
        self.components.update(components)

    # ---- save ----
    def checkpoint(self) -> dict:
        """The checkpoint dict (collective: every rank's TrainState part is gathered)."""
        mine = self.state.state_dict()
        ranks = self.rt.gather_object({k: mine[k] for k in PER_RANK_KEYS})
        ckpt = {"config": to_dict(self.cfg)}
        ckpt.update({name: c.state_dict() for name, c in self.components.items()})
        ckpt.update({k: mine[k] for k in SHARED_KEYS})
        ckpt.update({k: [r[k] for r in ranks] for k in PER_RANK_KEYS})
        ckpt.update(world_size=self.rt.world_size, meta=self.meta, data=self.data)
        return ckpt

    def save(self, best: bool = False) -> None:
        """last.pt (and best.pt when `best`); collective: every rank calls it."""
        ckpt = self.checkpoint()
        if self.rt.is_main:
            save_checkpoint(self.last_path, ckpt)
            if best:
                save_checkpoint(self.best_path, ckpt)

    # ---- resume ----
    def read_last(self, mmap: bool = True) -> dict:
        """last.pt for --resume (mmap: records only); an unreadable file is a SurgflowError that
        names the file and the ways on."""
        try:
            return peek_checkpoint(self.last_path) if mmap else load_checkpoint(self.last_path)
        except SurgflowError as e:
            raise SurgflowError(
                f"--resume: {e}. If it was copied or synced, copy it again (an interrupted copy "
                f"leaves it empty or truncated); otherwise start the run over: delete {self.dir} "
                f"(its progress is lost) or train into another --out") from None

    def restore(self) -> bool:
        """Load last.pt into the tracked components and this rank's part into the TrainState.
        False when there is nothing to resume."""
        if not self.last_path.exists():
            self.log(f"--resume: no checkpoint in {self.dir}; starting a new run")
            return False
        ckpt = self.read_last(mmap=False)
        diffs = config_differences(ckpt["config"], to_dict(self.cfg), defaults=to_dict(Config()))
        if diffs:
            raise SurgflowError(f"--resume: {self.last_path} was written by a different config; "
                                f"differing keys: {'; '.join(diffs)}. Resume with the run's own "
                                f"config ({self.out / 'config.yaml'}) or start a new --out")
        for name, c in self.components.items():
            if name in ckpt:
                c.load_state_dict(ckpt[name])
        mine = {k: ckpt.get(k) for k in SHARED_KEYS}
        if ckpt.get("world_size", 1) == self.rt.world_size:
            r = self.rt.rank
            mine.update(rng=ckpt["rng"][r], strategy=ckpt["strategy"][r],
                        running=(ckpt.get("running") or [None] * (r + 1))[r])
        else:
            self.log(f"--resume: checkpoint from {ckpt.get('world_size')} process(es), now "
                     f"{self.rt.world_size}: RNG streams and carried states restart (not bit-exact)")
            mine.update(rng=None, running=None,
                        strategy={k: v for k, v in ckpt["strategy"][0].items() if k != "carry"})
        self.state.load_state_dict(mine)
        return True
