"""`surgflow train`: one run directory per experiment, exact resume, best-by-validation checkpoints.

Run dir (docs/ARCHITECTURE.md, "Runs and checkpoints"):
    config.yaml            resolved config
    log.txt, metrics.csv, tb/   written by training/metrics_log.py (MetricsLogger)
    checkpoints/           last.pt and best.pt, written by training/checkpoint.py;
                           best.pt is chosen on the VALIDATION subset (never test); without a
                           validation subset best.pt = last.pt (the log says so)

What it trains is built by training/build.py (build_training: data, model, augmentation,
strategy), the same parts the input-path audit checks. Exact resume: a checkpoint holds the
weights, optimiser and schedule, and the run's TrainState (training/state.py: epoch /
step-in-epoch (the sampler skips to it without reading frames), best, every RNG (torch, numpy,
python, augmentation generator), the running epoch statistics and the carried temporal state of
every rank), so on CPU with train.deterministic an interrupted and resumed run ends with the same
weights as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from timm.utils import ModelEmaV3

from surgflow.config import Config, from_dict, to_dict, to_yaml
from surgflow.io_utils import SurgflowError, atomic_write_text, progress
from surgflow.outputs import (FolderLock, check_writable_dir, disk_full_error, is_disk_full,
                              remove_partial_writes)
from surgflow.checkpoint_io import repair_best
from surgflow.runs import RunMeta, shape_mismatches
from surgflow.training import build  # build.build_training: what trains (the audit's too)
from surgflow.training.checkpoint import CheckpointManager
from surgflow.training.metrics_log import MetricsLogger
from surgflow.training.runtime import clip_gradients, make_optimizer, param_groups, setup_runtime
from surgflow.training.schedules import make_scheduler
from surgflow.training.state import TrainState
from surgflow.training.validation import lower_is_better, validate, validation_metrics


class Trainer:
    """Builds everything for one run; `fit()` trains and returns the final metrics and paths."""

    def __init__(self, cfg: Config, out_dir, resume: bool = False,
                 overrides: Optional[list[str]] = None, allow_data_change: bool = False):
        if overrides:
            cfg = from_dict(to_dict(cfg), overrides)
        if cfg.data.root:  # stored resolved: eval from another folder finds the data
            cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
        self.cfg, self.out, self.resume = cfg, Path(out_dir), resume
        self.allow_data_change = allow_data_change
        self._lock: Optional[FolderLock] = None
        self.rt = setup_runtime(cfg)
        self.metrics = MetricsLogger(self.out, self.rt.is_main)
        self.ckpt = CheckpointManager(self.out, cfg, self.rt, self.log)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def log(self, msg: str) -> None:
        self.metrics.log(msg)

    @property
    def last_path(self) -> Path:
        return self.ckpt.last_path

    @property
    def best_path(self) -> Path:
        return self.ckpt.best_path

    # ---------------------------------------------------------------- setup
    def _setup(self) -> None:
        cfg, rt = self.cfg, self.rt
        refused, lock_notes = None, []
        if rt.is_main:  # one live run per run directory; a second one refuses before writing
            try:
                check_writable_dir(self.out, "run directory", "--out")
                self._lock = FolderLock(self.out, "surgflow train", log=lock_notes.append).acquire()
            except SurgflowError as e:
                refused = e
        if rt.any_true(refused is not None):
            raise refused or SurgflowError(f"rank 0 refused the run directory {self.out}")
        self.ckpt.refuse_existing_run(self.resume)
        self.metrics.open()
        if rt.is_main:
            for note in lock_notes:
                self.log(note)
            for folder in (self.out, self.ckpt.dir):  # e.g. .last.pt.*.tmp of killed writes
                remove_partial_writes(folder, self.log)
        rt.barrier()
        self.log(f"surgflow train -> {self.out} (rank 0 of {rt.world_size}, device {rt.device}, "
                 f"{cfg.train.precision}, strategy {cfg.train.strategy})")
        parts = build.build_training(cfg, rt, log=self.log)
        known = validation_metrics(cfg.task.tasks)
        if cfg.train.best_metric not in known:
            raise SurgflowError(f"train.best_metric: '{cfg.train.best_metric}' is not computed for "
                                f"tasks {cfg.task.tasks}; choose one of {', '.join(known)}")
        self.parts = parts
        self.ds, self.train_ds, self.val_ds = parts.ds, parts.train_ds, parts.val_ds
        self.instruments, self.model, self.generator = parts.instruments, parts.model, parts.generator
        self.ctx, self.strategy = parts.ctx, parts.strategy
        self.params, self.agc_params = parts.params, parts.agc_params
        extra = self.strategy.extra_module()
        if not self.uses_ddp:
            rt.broadcast_parameters(self.model)
            if extra is not None:
                rt.broadcast_parameters(extra)
        t = cfg.train
        # averaged weights for validation, best.pt and eval (train.ema_warmup: see TrainConfig)
        self.ema = (ModelEmaV3(self.model, decay=t.ema_decay, use_warmup=t.ema_warmup)
                    if t.ema_decay else None)
        self.optimizer = make_optimizer(param_groups(parts.trained, t), t)
        # the schedule spans every epoch's steps (not max_steps, which a resume may change)
        self.total_steps = sum(self.strategy.steps_per_epoch(e) for e in range(t.epochs))
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, t)
        self.meta = RunMeta.from_training(self.ds, cfg, self.model, self.instruments)
        # progress, best, running statistics, RNGs, the strategy's carried state: one object
        self.state = TrainState(self.strategy, {"augment": self.generator}, t.best_metric)
        self.ckpt.track(self.state, self.meta.to_dict(), data=self._data_record(),
                        model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        **({"ema": self.ema.module} if self.ema else {}))
        self._signal: Optional[int] = None  # SIGTERM/SIGINT received: checkpoint and stop
        if self.resume:
            self._load_resume()
        if rt.is_main:
            atomic_write_text(self.out / "config.yaml", to_yaml(cfg))
        self.metrics.open_tensorboard(purge_step=self.state.step if self.resume else None)
        self.metrics.config(to_dict(cfg), to_yaml(cfg), validation_metrics(cfg.task.tasks))
        self._restore_row()

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation and best.pt stand for: the EMA when train.ema_decay > 0."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def uses_ddp(self) -> bool:
        return self.strategy.uses_ddp_forward

    # ---------------------------------------------------------------- checkpoints
    def save(self, best: bool = False) -> None:
        """last.pt (and best.pt) at the state's position; with it the position's metrics row
        (state.metrics_row), so a stop between the checkpoint and metrics.csv loses nothing."""
        # collective: all ranks call it
        self.ckpt.save(best=best)

    def _data_record(self) -> dict:
        """{subset: {video: manifest checksum}} of the training and validation videos."""
        entries = self.ds.manifest.get("videos", {})
        subsets = {"train": self.train_ds, "val": self.val_ds}
        return {name: {v: str(entries.get(v, {}).get("checksum", "")) for v in ds.videos}
                for name, ds in subsets.items() if ds is not None}

    def _video_differences(self, saved: dict) -> list[str]:
        """The videos of the checkpoint's train/val subsets that are gone, new or re-prepared
        with other content (the manifest's per-video checksums); [] for a checkpoint without
        the record (older surgflow)."""
        def names(videos):
            videos = sorted(videos)
            return ", ".join(videos[:8]) + (f" (+{len(videos) - 8} more)" if len(videos) > 8 else "")

        now = self._data_record()
        diffs = []
        for subset in ("train", "val"):
            if not isinstance(saved.get(subset), dict):
                continue
            a, b = saved[subset], now.get(subset, {})
            changed = [v for v in a if v in b and a[v] != b[v]]
            if changed:
                diffs.append(f"{subset} videos {names(changed)}: other content (manifest checksums "
                             f"differ: re-prepared from other sources)")
            if set(a) - set(b):
                diffs.append(f"{subset} videos {names(set(a) - set(b))}: no longer in the {subset} "
                             f"subset")
            if set(b) - set(a):
                diffs.append(f"{subset} videos {names(set(b) - set(a))}: new in the {subset} subset")
        return diffs

    def _check_resume_data(self) -> None:
        """--resume on other data (root, frame size, labels, videos) only when the user says so."""
        if not self.last_path.exists():
            return
        ck = self.ckpt.read_last(mmap=True)
        meta = ck.get("meta") or {}
        diffs = [f"{k}: {meta[k]!r} (checkpoint) vs {self.meta[k]!r} (now)"
                 for k in ("dataset_root", "size", "fps", "phase_names", "tool_names", "instruments")
                 if k in meta and meta[k] != self.meta[k]]
        diffs += self._video_differences(ck.get("data") or {})
        if diffs and not self.allow_data_change:
            raise SurgflowError(
                f"--resume: {self.last_path} was trained on other data: {'; '.join(diffs)}. Resume "
                f"with the run's data.root, or pass --allow-data-change (moved or re-prepared data) "
                f"to continue on the new data anyway")
        if diffs:
            self.log(f"--resume with --allow-data-change: {'; '.join(diffs)}")

    def _load_resume(self) -> None:
        self._check_resume_data()
        try:
            restored = self.ckpt.restore()
        except RuntimeError as e:
            if "size mismatch" not in str(e):
                raise
            raise SurgflowError(
                f"--resume: the weights in {self.last_path} do not fit the model built now "
                f"({shape_mismatches(self.model, self.ckpt.read_last(mmap=True)['model'])}): "
                f"the dataset's phases/tools or the model changed; start a new --out") from None
        if not restored:
            self.resume = False
            return
        st = self.state
        if self.rt.is_main and not repair_best(self.ckpt.dir, self.log):
            st.forget_best()
        self.metrics.resume_rows(st.epoch)
        self.log(f"resumed from {self.last_path}: epoch {st.epoch + 1}, step {st.step} "
                 f"({st.step_in_epoch} into the epoch)")

    # ---------------------------------------------------------------- metrics
    def _end_of_epoch(self, epoch_done: float, train_logs: dict, fps: float, run_val: bool) -> dict:
        """Validate (videos spread over the ranks), update best, write last (and best)
        checkpoints, the metrics row and the TensorBoard ribbons."""
        metrics: dict = {}
        phases: dict = {}
        if run_val and self.val_ds is not None:
            metrics = validate(self.eval_model, self.val_ds, self.cfg, self.rt, self.instruments,
                               phases)
            if self.cfg.train.best_metric not in metrics:
                raise SurgflowError(f"train.best_metric: '{self.cfg.train.best_metric}' is not "
                                    f"computed for tasks {self.cfg.task.tasks}; choose one of "
                                    f"{', '.join(sorted(metrics))}")
        name, st = self.cfg.train.best_metric, self.state
        # same metrics, same answer on every rank
        improved = st.record_validation(metrics.get(name), self.cfg.train.best_window,
                                        lower_is_better(name), epoch_done)
        if self.val_ds is None:
            improved = True  # best = last
            st.best.update(epoch=epoch_done, step=st.step)
        row = {"epoch": epoch_done, "step": st.step,
               **{f"train/{k}": v for k, v in train_logs.items()}, **metrics,
               "lr": float(self.optimizer.param_groups[0]["lr"]), "frames_per_s": fps}
        st.metrics_row = row  # the row travels with the checkpoint
        self.save(best=improved)
        self.metrics.write_row(row, st.step)
        if phases:
            self.metrics.ribbons(phases, len(self.ds.phase_names), st.step)
        if self.rt.is_main:
            self.log(self._row_line(row, improved and self.val_ds is not None))
        self.rt.barrier()
        return metrics

    @staticmethod
    def _row_line(row: dict, best: bool) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                          if k not in ("epoch", "step", "lr") and isinstance(v, float))
        return f"epoch {row['epoch']:g} step {row['step']}: {shown}" + (" (best)" if best else "")

    def _restore_row(self) -> None:
        """On --resume from an epoch's checkpoint: its metrics row back in metrics.csv and
        log.txt when the interrupted run stopped before writing them (kill, disk full), and in
        TensorBoard in any case (the resume purges its events from the checkpoint's step on)."""
        row, st = self.state.metrics_row, self.state
        if not row or not self.rt.is_main or float(row["epoch"]) > st.epoch:
            return  # a partial epoch's row is replaced by the full epoch's
        if self.metrics.restore_row(row, st.step):
            best = self.val_ds is not None and st.best.get("step") == row["step"]
            self.log(self._row_line(row, best) + f" [restored from {self.last_path}: the run "
                     f"stopped after this checkpoint, before its metrics row was written]")

    # ---------------------------------------------------------------- training
    def _fail(self, what: str, batch) -> None:
        videos = [f"{v}@{int(s)}" for v, s in zip(batch.videos, getattr(batch, "starts", [0] * 99)) if v]
        st = self.state
        raise SurgflowError(
            f"{what} at step {st.step + 1} (epoch {st.epoch + 1}, step {st.step_in_epoch + 1} "
            f"of the epoch), batch videos (video@first frame): {', '.join(videos) or '?'}. Training "
            f"stopped before the optimiser step; the last good checkpoint is kept"
            f"{' (' + str(self.last_path) + ')' if self.last_path.exists() else ' (none written yet)'}. "
            f"Lower train.lr, set train.grad_clip, or check these frames")

    def fit(self) -> dict:
        rt, t, st = self.rt, self.cfg.train, self.state
        stopped = "done"
        last_metrics: dict = {}
        train_logs: dict = {}
        handlers = self._catch_stop_signals()
        try:
            while st.epoch < t.epochs:
                if t.max_steps and st.step >= t.max_steps:
                    stopped = "max_steps"
                    break
                if self._stop_requested():  # arrived during validation: last.pt is this position
                    stopped = self._stop_for_signal(save=False)
                    break
                epoch = st.epoch
                # the strategy's epoch start (and its resumed state); the loss sums over the
                # epoch's steps start at zero, or a resumed epoch continues the saved ones
                st.start_epoch(epoch)
                n_steps = self.strategy.steps_per_epoch(epoch)
                frames, t_train, fps = 0, 0.0, 0.0
                bar = progress(total=n_steps, initial=st.step_in_epoch,
                               desc=f"epoch {epoch + 1}/{t.epochs}", unit="step",
                               **({} if rt.is_main else {"disable": True}))
                t0 = time.perf_counter()
                for batch in self.strategy.batches(epoch, st.step_in_epoch):
                    if t.max_steps and st.step >= t.max_steps:
                        stopped = "max_steps"
                        break
                    self.optimizer.zero_grad(set_to_none=True)
                    # under DDP the strategy weights each task's loss by this rank's share of its
                    # frames (class-weighted for phases): the gradient is the all-frames one
                    res = self.strategy.train_step(batch)
                    if rt.any_true(not math.isfinite(res.loss)):
                        self._fail(f"non-finite loss ({res.loss})", batch)
                    if not self.uses_ddp:
                        rt.all_reduce_gradients(self.params)
                    gnorm = clip_gradients(self.params, t.grad_clip, t.agc, self.agc_params)
                    if rt.any_true(not math.isfinite(gnorm)):
                        self._fail(f"non-finite gradient norm ({gnorm}, loss {res.loss:.4g})", batch)
                    lr = self.optimizer.param_groups[0]["lr"]  # the lr of this step
                    self.optimizer.step()
                    self.scheduler.step()
                    # losses weighted by the step's valid frames; the gradient norm is the same
                    # on every rank: per step
                    st.count_step(res.logs, res.frames, gnorm)
                    if self.ema is not None:
                        self.ema.update(self.model, step=st.step)
                    frames += res.frames
                    if not rt.distributed:
                        fps = frames / max(time.perf_counter() - t0, 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{res.loss:.4f}", lr=f"{lr:.2e}", fps=f"{fps:.1f}")
                    if t.log_every and st.step % t.log_every == 0:  # every rank: collectives
                        all_frames, loss_sum, step_frames = rt.all_reduce_sum(
                            [frames, res.loss * res.frames, res.frames])
                        fps = all_frames / max(time.perf_counter() - t0, 1e-9)
                        loss = loss_sum / step_frames if step_frames else float("nan")
                        if rt.is_main:
                            self.metrics.scalars({"train/step_loss": loss, "train/grad_norm": gnorm,
                                                  "train/lr": lr, "train/frames_per_s": fps},
                                                 st.step)
                            self.metrics.write_line(f"step {st.step}: loss {loss:.4f}, grad norm "
                                                    f"{gnorm:.3g}, {fps:.1f} frames/s")
                    if t.checkpoint_every and st.step % t.checkpoint_every == 0:
                        self.save()
                    if self._stop_requested():
                        stopped = self._stop_for_signal(save=True, n_steps=n_steps)
                        break
                t_train = time.perf_counter() - t0
                bar.close()
                if stopped in ("SIGTERM", "SIGINT"):
                    break
                # frames of every rank (not rank 0's x world size) and per-frame mean losses
                running = st.running
                sums = running["sums"]
                keys = list(sums)  # the same order on every rank (the same code logged them)
                totals = rt.all_reduce_sum([frames, running["frames"]] + [sums[k] for k in keys])
                fps = totals[0] / max(t_train, 1e-9)
                train_logs = {k: v / max(totals[1], 1.0) for k, v in zip(keys, totals[2:])}
                train_logs["grad_norm"] = running["grad_norm"] / max(running["n"], 1)
                if stopped == "max_steps" and st.step_in_epoch < n_steps:
                    # partial epoch: keep the position; validate so the stop point has metrics
                    self.log(f"train.max_steps={t.max_steps} reached")
                    last_metrics = self._end_of_epoch(epoch + st.step_in_epoch / n_steps,
                                                      train_logs, fps, run_val=True) or last_metrics
                    break
                st.finish_epoch()
                run_val = (st.epoch % max(t.val_every, 1) == 0) or st.epoch == t.epochs \
                    or bool(t.max_steps and st.step >= t.max_steps)
                last_metrics = self._end_of_epoch(float(st.epoch), train_logs, fps, run_val) \
                    or last_metrics
            if stopped == "done" and st.epoch >= t.epochs:
                self.log(f"finished {t.epochs} epochs, {st.step} steps")
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise disk_full_error(e, self.out, f"the checkpoints written before are intact "
                                  f"(atomic writes); free space or move {self.out}, then continue "
                                  f"with `{self._resume_command()}`") from None
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self.close()
        return {
            "run_dir": str(self.out), "last": str(self.last_path),
            "best": str(self.best_path), "epoch": st.epoch, "step": st.step,
            "step_in_epoch": st.step_in_epoch, "stopped": stopped,
            "train": train_logs, "val": last_metrics, "best_metric": dict(st.best),
        }

    # ---------------------------------------------------------------- stop signals
    def _resume_command(self) -> str:
        return (f"surgflow train {shlex.quote(str(self.out / 'config.yaml'))} --out "
                f"{shlex.quote(str(self.out))} --resume")

    def _catch_stop_signals(self) -> dict:
        """SIGTERM (what SLURM and Kubernetes send before they kill a job) and SIGINT (Ctrl-C)
        end the run at the next step with a checkpoint (as Lightning does); a second one
        interrupts at once. Returns the previous handlers (restored when fit ends)."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be set from the main thread

        def on_signal(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt  # asked twice: stop now (last.pt is the previous one)
            self._signal = signum
            if self.rt.is_main:  # os.write: safe while the main thread is inside a print
                os.write(2, f"\n{signal.Signals(signum).name} received: stopping with a checkpoint "
                            f"after the current step (send it again to stop at once)\n".encode())

        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue  # ignored by whoever started us (e.g. SIGINT of `cmd &`): stays ignored
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, on_signal)
        return old

    def _stop_requested(self) -> bool:
        return self.rt.any_true(self._signal is not None)  # every rank stops at the same step

    def _stop_for_signal(self, save: bool, n_steps: int = 0) -> str:
        name = signal.Signals(self._signal).name if self._signal is not None else "SIGTERM"
        if save:  # the position after this step; a resume continues bit for bit
            self.save()
        st = self.state
        where = (f"epoch {st.epoch + 1}, step {st.step_in_epoch} of {n_steps}"
                 if st.step_in_epoch else f"after epoch {st.epoch}")
        self.log(f"{name} received: stopped at step {st.step} ({where}); checkpoint "
                 f"{self.last_path} holds this position. Continue with `{self._resume_command()}`")
        return name

    def close(self) -> None:
        self.metrics.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.rt.close()


def train(cfg: Config, out_dir, resume: bool = False, overrides: Optional[list[str]] = None,
          allow_data_change: bool = False) -> dict:
    """Train per `cfg` into `out_dir` (resume: continue from checkpoints/last.pt; a resume on
    other data is refused unless allow_data_change). Returns
    {run_dir, last, best, epoch, step, stopped, train: {...}, val: {...}, best_metric: {...}}."""
    return Trainer(cfg, out_dir, resume=resume, overrides=overrides,
                   allow_data_change=allow_data_change).fit()
