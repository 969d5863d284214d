"""The checkpoints of one run directory: what they hold, when both are written, how a run resumes.

    checkpoints/last.pt   every train.checkpoint_every steps and at each epoch end (atomic)
    checkpoints/best.pt   best by train.best_metric on the validation subset

A checkpoint (format in training/checkpoint.py) holds the state dict of every registered
component (model, optimizer, lr scheduler), the progress counters, and per rank the RNG states and
the strategy state (carried LSTM/TCN state), so a resumed run continues bit for bit on CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from surgflow.config import Config, to_dict
from surgflow.io_utils import SurgflowError
from surgflow.training.checkpoint import (config_differences, load_checkpoint, peek_checkpoint,
                                          save_checkpoint)
from surgflow.training.runtime import Runtime, get_rng_state, set_rng_state

# progress counters saved beside the state dicts (the trainer owns their values)
PROGRESS_KEYS = ("epoch", "step", "step_in_epoch", "best")


class CheckpointManager:
    def __init__(self, out: Path, cfg: Config, rt: Runtime, log: Callable[[str], None]):
        self.out, self.cfg, self.rt, self.log = Path(out), cfg, rt, log
        self.dir = self.out / "checkpoints"
        self.last_path, self.best_path = self.dir / "last.pt", self.dir / "best.pt"
        self.components: dict = {}  # name -> object with state_dict()/load_state_dict()
        self.generators: dict[str, torch.Generator] = {}
        self.strategy = None
        self.meta: dict = {}
        self.data: dict = {}  # {subset: {video: checksum}} of the videos trained and validated on
        self.running: Callable[[], dict] = dict  # this rank's running epoch statistics

    def refuse_existing_run(self, resume: bool) -> None:
        if not resume and self.last_path.exists():
            raise SurgflowError(f"{self.out} already holds a run ({self.last_path}); pass --resume to "
                                f"continue it, or choose another --out")

    def track(self, strategy, generators: dict, meta: dict, running: Callable[[], dict] = dict,
              data: Optional[dict] = None, **components) -> None:
        """What goes into a checkpoint: `components` by name; per rank the RNG states, the strategy
        state and `running()` (the epoch's loss sums so far: a resumed epoch logs all its steps);
        `data` ({subset: {video: manifest checksum}}: a resume on re-prepared data is caught)."""
        self.strategy, self.generators, self.meta, self.running = strategy, generators, meta, running
        self.data = dict(data or {})
        self.components.update(components)

    # ---- save ----
    def _gather_rank_state(self) -> list:
        """Every rank's RNG states and strategy state, on every rank (collective)."""
        mine = {"rng": get_rng_state(self.generators), "strategy": self.strategy.state_dict(),
                "running": self.running()}
        return self.rt.gather_object(mine)

    def state(self, progress: dict) -> dict:
        ranks = self._gather_rank_state()
        ckpt = {"config": to_dict(self.cfg)}
        ckpt.update({name: c.state_dict() for name, c in self.components.items()})
        ckpt.update({k: progress[k] for k in PROGRESS_KEYS})
        ckpt.update({k: v for k, v in progress.items() if k not in PROGRESS_KEYS})
        ckpt.update(rng=[r["rng"] for r in ranks], strategy=[r["strategy"] for r in ranks],
                    running=[r["running"] for r in ranks], world_size=self.rt.world_size,
                    meta=self.meta, data=self.data)
        ckpt["best"] = dict(ckpt["best"])
        return ckpt

    def save(self, progress: dict, best: bool = False) -> None:
        """last.pt (and best.pt when `best`); collective: every rank calls it."""
        ckpt = self.state(progress)
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

    def restore(self) -> Optional[dict]:
        """Load last.pt into the tracked components and this rank's RNGs. Returns the checkpoint's
        progress (PROGRESS_KEYS + extra keys) with `pending_strategy` (the strategy state to load
        after the first start_epoch) and `running` (this rank's running epoch statistics, None
        when they cannot continue), or None when there is nothing to resume."""
        if not self.last_path.exists():
            self.log(f"--resume: no checkpoint in {self.dir}; starting a new run")
            return None
        ckpt = self.read_last(mmap=False)
        diffs = config_differences(ckpt["config"], to_dict(self.cfg), defaults=to_dict(Config()))
        if diffs:
            raise SurgflowError(f"--resume: {self.last_path} was written by a different config; "
                                f"differing keys: {'; '.join(diffs)}. Resume with the run's own "
                                f"config ({self.out / 'config.yaml'}) or start a new --out")
        for name, c in self.components.items():
            if name in ckpt:
                c.load_state_dict(ckpt[name])
        if ckpt.get("world_size", 1) == self.rt.world_size:
            r = self.rt.rank
            set_rng_state(ckpt["rng"][r], self.generators)
            pending = dict(ckpt["strategy"][r])
            running = (ckpt.get("running") or [None] * (r + 1))[r]
        else:
            self.log(f"--resume: checkpoint from {ckpt.get('world_size')} process(es), now "
                     f"{self.rt.world_size}: RNG streams and carried states restart (not bit-exact)")
            pending = {k: v for k, v in ckpt["strategy"][0].items() if k != "carry"}
            running = None
        if ckpt["step_in_epoch"] == 0:  # an epoch starts with fresh states
            pending.pop("carry", None)
            running = None
        skip = set(self.components) | {"config", "rng", "strategy", "running", "world_size", "meta",
                                       "data"}
        progress = {k: v for k, v in ckpt.items() if k not in skip}
        progress.update(pending_strategy=pending, running=running)
        return progress
