"""A run's artefacts, read by every consumer (evaluation, online prediction, export, experiments):
its RunMeta record, `load_model` (which rebuilds the model from a checkpoint), which checkpoint
of a run folder to read and what to tell its reader (checkpoint_notes).

A checkpoint is a dict of tensors and primitives, written atomically and loaded with
weights_only=True by surgflow/checkpoint_io.py, the one module that reads and writes checkpoint
files (docs/ARCHITECTURE.md, "Runs and checkpoints"): config (dict), model (state dict),
optimizer, epoch, step, step_in_epoch, rng, meta (RunMeta.to_dict()), best; for resume also
strategy, running, world_size, data ({subset: {video: manifest checksum}}: a resume on
re-prepared videos is refused) and metrics_row (the epoch's metrics.csv row, restored on resume
when a stop came between the checkpoint and the row) (training/checkpoint.py, training/state.py).

RunMeta: what a trained model needs to be used on new data. The trainer writes
`RunMeta.from_training(...)`; readers get one from `load_model` or `RunMeta.coerce`. A field an
older checkpoint lacks is filled from a fact the checkpoint records elsewhere (its config, its
model's preprocessing) or refused with a message; never a silent guess.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

# checkpoint files are read and written by checkpoint_io only; load_checkpoint is also imported
# from here by evaluation (the viewer, TensorBoard)
from surgflow.checkpoint_io import best_problem, checkpoint_counters, load_checkpoint
from surgflow.config import CHOICES, ConfigError, TrainConfig, from_dict
from surgflow.io_utils import SurgflowError
from surgflow.outputs import lock_holder


@dataclass
class RunMeta:
    phase_names: list[str]
    tool_names: list[str] = field(default_factory=list)  # [] when the dataset has no tool labels
    instruments: list[str] = field(default_factory=list)  # anticipation instruments ([] = none)
    horizon: float = 0.0  # anticipation horizon h in minutes (0 when there are no instruments)
    fps: Optional[float] = None  # frame rate the model was trained at (None: not recorded)
    size: Optional[tuple[int, int]] = None  # (H, W) of the training frames
    preprocess: dict = field(default_factory=dict)  # {"mean": [3], "std": [3], "size": [H, W]}
    dataset_root: str = ""  # prepared dataset the run trained on
    split: str = "all"  # split name or split file of that dataset
    causal: bool = True  # False: the head looks at future frames (offline only)

    @classmethod
    def from_training(cls, dataset, cfg, model, instruments) -> "RunMeta":
        """dataset: PreparedDataset; cfg: Config; model: SurgflowModel."""
        return cls(phase_names=list(dataset.phase_names), tool_names=list(dataset.tool_names),
                   instruments=list(instruments), horizon=float(cfg.task.horizon),
                   fps=float(dataset.fps), size=(int(dataset.size[0]), int(dataset.size[1])),
                   preprocess=dict(model.preprocess), dataset_root=str(cfg.data.root),
                   split=str(cfg.data.split), causal=bool(model.is_causal))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], cfg=None, model=None,
                  where: str = "checkpoint") -> "RunMeta":
        """A checkpoint's meta dict (any surgflow version) -> RunMeta. `cfg` (the checkpoint's
        Config) and `model` (the SurgflowModel rebuilt from it) supply what older dicts lack."""
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SurgflowError(f"{where}: meta has unknown keys {', '.join(unknown)}; "
                                "written by a newer surgflow?")
        if "phase_names" not in d:
            raise SurgflowError(f"{where}: meta is missing (phase_names); re-train or re-save it")
        instruments = list(d.get("instruments") or [])
        horizon = d.get("horizon")
        # what the model's task layers were built with (anticipation: its horizon)
        built: dict = {}
        for task in getattr(model, "tasks", {}).values():
            built.update(task.run_meta())
        if horizon is None:
            if cfg is not None:
                horizon = cfg.task.horizon  # recorded in the checkpoint's config
            elif built.get("horizon") is not None:
                horizon = built["horizon"]
            elif instruments:
                raise SurgflowError(f"{where}: meta lists anticipation instruments but no horizon; "
                                    "re-save it with the run's task.horizon")
            else:
                horizon = 0.0  # no anticipation output: the horizon is never used
        preprocess = dict(d.get("preprocess") or getattr(model, "preprocess", None) or {})
        size = d.get("size") or preprocess.get("size")
        causal = d.get("causal")
        if causal is None:
            causal = bool(getattr(model, "is_causal", True))
        fps = d.get("fps")
        return cls(phase_names=list(d["phase_names"]), tool_names=list(d.get("tool_names") or []),
                   instruments=instruments, horizon=float(horizon),
                   fps=float(fps) if fps else None,
                   size=(int(size[0]), int(size[1])) if size else None, preprocess=preprocess,
                   dataset_root=str(d.get("dataset_root") or ""), split=str(d.get("split") or "all"),
                   causal=bool(causal))

    @classmethod
    def coerce(cls, meta, model=None) -> "RunMeta":
        """A RunMeta as it is, or a meta dict read with from_dict (`model` fills gaps)."""
        return meta if isinstance(meta, RunMeta) else cls.from_dict(meta, model=model, where="meta")

    # Read access by key, for code written against the meta dict: every key is always present.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.to_dict().get(key)
        return default if value is None else value


# ------------------------------------------------------------------ run folders

def live_run(run_dir: str | Path) -> Optional[str]:
    """'surgflow train, pid N on HOST, started T' while a live process holds the run folder's
    lock (outputs.FolderLock), else None."""
    owner = lock_holder(run_dir)
    if owner is None:
        return None
    return (f"{owner.get('command', 'a surgflow command')}, pid {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')}, started {owner.get('started', '?')}")


def run_dir_of(path_or_run_dir: str | Path) -> Optional[Path]:
    """The run folder of a run folder or of a checkpoint inside RUN/checkpoints (else None)."""
    p = Path(path_or_run_dir)
    if p.is_dir():
        return p
    return p.parent.parent if p.parent.name == "checkpoints" else None


def checkpoint_notes(path_or_run_dir: str | Path, info: Mapping[str, Any]) -> list[str]:
    """What a reader of a run's checkpoint should be told: which checkpoint (file, step, epoch;
    `info` from load_model), that the run is still training, that best.pt could not be checked
    against an unreadable last.pt."""
    step, epoch, into = info.get("step"), info.get("epoch"), info.get("step_in_epoch")
    where = "step unknown" if step is None else f"step {step}"
    if isinstance(epoch, int):  # completed epochs (+ steps into the next one)
        where += f", after {epoch} epoch(s)" + (f" and {into} step(s) of the next" if into else "")
    notes = [f"checkpoint {info.get('path')} ({where})"]
    run = run_dir_of(path_or_run_dir)
    if run is None:
        return notes
    live = live_run(run)
    if live is not None:
        notes.append(f"the run is live: {run} is still training ({live}); these results are of "
                     f"the checkpoint above (step {step}), later checkpoints will differ")
    last = run / "checkpoints" / "last.pt"
    if Path(info.get("path", "")).name == "best.pt" and last.is_file():
        try:
            rec = checkpoint_counters(last)
        except SurgflowError as e:
            notes.append(f"{e}: best.pt could not be checked against it (used as it is)")
        else:
            if live is not None and rec["best"].get("step") not in (None, step):
                notes.append(f"the live run has a newer best by now (step {rec['best']['step']}, "
                             f"recorded in last.pt; best.pt follows it): evaluate again for it")
    return notes


def kept_checkpoint(run_dir: str | Path) -> str:
    """'best' or 'last': the checkpoint a run stands for, its train.keep as recorded in
    RUN/config.yaml (a run from before train.keep existed kept best.pt, the default)."""
    path = Path(run_dir) / "config.yaml"
    try:
        train = (yaml.safe_load(path.read_text()) or {}).get("train") or {}
    except (OSError, yaml.YAMLError) as e:
        raise SurgflowError(f"{path}: unreadable ({e}), so the checkpoint the run keeps "
                            f"(train.keep) is unknown; name it: --checkpoint best or last") from None
    keep = train.get("keep", TrainConfig.keep)
    if keep not in CHOICES["train.keep"]:
        raise SurgflowError(f"{path}: train.keep '{keep}' is not one of "
                            f"{', '.join(CHOICES['train.keep'])}; name the checkpoint: "
                            f"--checkpoint best or last")
    return keep


def resolve_checkpoint_path(path_or_run_dir: str | Path, which: str = "kept") -> Path:
    """The checkpoint file of a run directory (which: kept | best | last | a path) or the file
    itself; kept = the one the run's train.keep names (kept_checkpoint). Never falls back from
    best to last: a missing or stale best.pt is an error naming the fix."""
    p = Path(path_or_run_dir)
    if p.is_dir():
        if which == "kept":
            which = kept_checkpoint(p)
        if which in ("best", "last"):
            cand = p / "checkpoints" / f"{which}.pt"
            if which == "best" and (p / "checkpoints" / "last.pt").is_file():
                problem = best_problem(p / "checkpoints")
                live = live_run(p) if problem is not None else None
                if live is not None and cand.is_file():
                    problem = None  # a live run writes best.pt right after last.pt: not a loss
                elif live is not None:
                    raise SurgflowError(
                        f"{p} is still training ({live}) and has no best.pt yet ({problem}); wait "
                        f"for its next validation, or evaluate its last checkpoint explicitly "
                        f"(`--checkpoint last`)")
                if problem is not None:
                    raise SurgflowError(
                        f"{problem}. Use the last checkpoint explicitly (`--checkpoint last` for "
                        f"eval, predict, export and audit), or run `surgflow train "
                        f"{p / 'config.yaml'} --out {p} --resume` once: it restores best.pt when "
                        f"last.pt is the best")
        else:
            cand = Path(which) if Path(which).is_absolute() or Path(which).is_file() else p / which
        if not cand.is_file():
            raise SurgflowError(f"{p}: no checkpoint '{which}' (looked for {cand}); "
                                "is this a surgflow run directory?")
        return cand
    if p.is_file():
        return p
    raise SurgflowError(f"{p}: neither a run directory nor a checkpoint file")


def shape_mismatches(model, state: dict, limit: int = 3) -> str:
    """`name: checkpoint [a, b] vs model [c, d]` for the first tensors whose shapes differ."""
    own = model.state_dict()
    bad = [f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}" for k, v in state.items()
           if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    return "; ".join(bad[:limit]) + (f" (+{len(bad) - limit} more)" if len(bad) > limit else "")


def load_model(path_or_run_dir: str | Path, which: str = "kept", device="cpu",
               info: Optional[dict] = None):
    """(model.eval(), cfg, RunMeta) from a run directory (which: kept | best | last | a path; see
    resolve_checkpoint_path) or a .pt file.
    `info`, when given, receives the checkpoint read: {path, which (best, last or the file given),
    step, epoch, step_in_epoch} (for checkpoint_notes: a live run replaces its files, so they are
    taken from the loaded dict)."""
    from surgflow.models.model import build_model  # heavy: torch; the viewer and api import runs without it

    is_run_dir = Path(path_or_run_dir).is_dir()
    if which == "kept" and is_run_dir:
        which = kept_checkpoint(path_or_run_dir)
    path = resolve_checkpoint_path(path_or_run_dir, which)
    ckpt = load_checkpoint(path)
    if info is not None:
        info.update(path=str(path), which=which if is_run_dir else str(path),
                    step=ckpt.get("step"), epoch=ckpt.get("epoch"),
                    step_in_epoch=ckpt.get("step_in_epoch"))
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
    # train.ema_decay > 0: the averaged weights are the ones validated (best.pt) and used
    weights_key = "ema" if cfg.train.ema_decay else "model"
    if weights_key not in ckpt:
        raise SurgflowError(f"checkpoint {path}: no '{weights_key}' weights although its config has "
                            f"train.ema_decay={cfg.train.ema_decay}; the file was edited or is "
                            f"incomplete: use the run's own checkpoint")
    weights = ckpt[weights_key]
    if info is not None:
        info["weights"] = weights_key
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError:  # size mismatch: the weights are of another model shape
        raise SurgflowError(
            f"checkpoint {path}: its weights do not fit the model its config and meta describe "
            f"({shape_mismatches(model, weights)}); the file was edited or mixes two runs: "
            f"use the checkpoint written with this config") from None
    if missing or unexpected:
        raise SurgflowError(
            f"checkpoint {path}: weights do not match the model built from its config "
            f"(missing: {', '.join(missing[:5]) or '-'}; unexpected: {', '.join(unexpected[:5]) or '-'})")
    model.to(device)
    # again with the model: an older meta's missing preprocess/size/causal come from the model
    return model.eval(), cfg, RunMeta.from_dict(raw, cfg, model, where=f"checkpoint {path}")
