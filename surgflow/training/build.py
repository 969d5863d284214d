"""What a training run is built from, built in one place: `build_training(cfg, rt)`.

The trainer (`surgflow train`, hence the demo and the cheating experiment, which train through
it) and the input-path audit (`surgflow audit CONFIG`, training/input_audit.py) both call it, so
the audit checks exactly the dataset, model, sampler, augmentation and strategy that train. The
optimiser, schedule, EMA and checkpoints are the trainer's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from surgflow.audit.guards import bn_pitfall_warning
from surgflow.config import Config
from surgflow.data.augment import build_augment
from surgflow.data.store import PreparedDataset
from surgflow.io_utils import SurgflowError
from surgflow.models.model import build_model
from surgflow.models.tasks import check_task_labels, task_training_inputs
from surgflow.training.runtime import Runtime
from surgflow.training.strategies import Strategy, TrainContext, build_strategy


@dataclass
class TrainingParts:
    ds: Any  # PreparedDataset of the config's split
    train_ds: Any  # its training subset
    val_ds: Optional[Any]  # its validation subset (None: the split has none, or it is empty)
    instruments: list  # anticipation instruments ([] when the task is off)
    model: nn.Module  # SurgflowModel on rt.device, train mode (rt.prepare_model)
    augment: Optional[Callable]  # the training augmentation (None: off)
    generator: torch.Generator  # the augmentation's CPU generator, seeded per rank
    ctx: TrainContext
    strategy: Strategy
    trained: nn.ModuleList  # model + the strategy's extra module (two_stage frame classifier)
    params: list  # trainable parameters of `trained`
    agc_params: list  # params minus the output layers (adaptive gradient clipping skips them)


def augment_seed(cfg: Config, rank: int) -> int:
    """The augmentation generator's seed: its own stream per rank."""
    return cfg.train.seed * 1000 + 17 + rank


def build_training(cfg: Config, rt: Runtime, log: Optional[Callable[[str], None]] = None,
                   augment: Union[str, Callable, None] = "config",
                   load_pretrained: bool = True) -> TrainingParts:
    """The parts of a training run of `cfg` on `rt`'s device. log: the run's log (dataset notes as
    WARNING lines, the data and model summary, the BN pitfall warning, runtime notes); None: the
    dataset's notes as warnings, nothing else said. augment: "config" (build_augment(cfg.data)), None
    (off) or any callable like ClipAugment. load_pretrained: False for random weights (audits)."""
    say = log or (lambda msg: None)
    if not cfg.data.root:
        raise SurgflowError("data.root: not set; point it to a dataset written by `surgflow prepare`")
    # notes (videos prepare could not do, and why) go to the log, not only to stderr
    ds = PreparedDataset(cfg.data.root, split=cfg.data.split,
                         **({"log": lambda note: log(f"WARNING: {note}")} if log else {}))
    train_ds = ds.subset(cfg.data.train_subset)
    if not train_ds.videos:
        raise SurgflowError(f"data.split '{cfg.data.split}': the '{cfg.data.train_subset}' subset "
                            f"of {cfg.data.root} has no videos")
    val_ds = None
    if cfg.data.val_subset:
        try:
            val = ds.subset(cfg.data.val_subset)
            val_ds = val if val.videos else None
        except SurgflowError:
            val_ds = None
    # each task needs labels the dataset has (the Task registry says which: models/tasks.py)
    instruments = check_task_labels(cfg.task.tasks, cfg.task, ds, f"dataset {cfg.data.root}")
    # frame size and rate belong in the log: a recipe's numbers hold at the size it was measured at
    say(f"data: {cfg.data.root} split {cfg.data.split}: {len(train_ds.videos)} train videos, "
        f"{len(val_ds.videos) if val_ds else 0} validation videos; frames "
        f"{ds.size[1]}x{ds.size[0]} (WxH) at {ds.fps:g} fps")
    if val_ds is None:
        say(f"no validation subset in split '{cfg.data.split}': best.pt = last.pt "
            f"(checkpoints are never selected on test)")

    # the model, seeded identically on every rank (setup_runtime seeded them)
    # what the task layers take from the training subset (phase: its label counts)
    task_inputs = task_training_inputs(cfg.task.tasks, train_ds)
    model = build_model(cfg, num_phases=len(ds.phase_names), num_tools=len(ds.tool_names),
                        num_instruments=len(instruments), size=tuple(ds.size),
                        load_pretrained=load_pretrained, **task_inputs)
    model = rt.prepare_model(model)
    model.train()
    if log is not None:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        log(f"model: {cfg.model.backbone} ({cfg.model.norm}) + {cfg.model.head}, tasks "
            f"{cfg.task.tasks}; {n_all / 1e6:.2f}M parameters, {n_train / 1e6:.2f}M trainable")
        warning = bn_pitfall_warning(model, cfg)
        if warning:
            log(f"WARNING: {warning}")
        for note in rt.notes:
            log(note)

    # augmentation and strategy (its sampler over the training subset)
    aug = build_augment(cfg.data) if augment == "config" else augment
    generator = torch.Generator().manual_seed(augment_seed(cfg, rt.rank))
    ctx = TrainContext(cfg=cfg, rt=rt, model=model, train_ds=train_ds, instruments=instruments,
                       augment=aug, generator=generator, log=say)
    strategy = build_strategy(ctx)
    extra = strategy.extra_module()
    trained = nn.ModuleList([model] + ([extra] if extra is not None else []))
    params = [p for p in trained.parameters() if p.requires_grad]
    # AGC skips the output layers (task layers, the two-stage frame classifier) as timm does
    outputs = {id(p) for p in model.tasks.parameters()}
    outputs |= {id(p) for p in (extra.parameters() if extra is not None else [])}
    agc_params = [p for p in params if id(p) not in outputs]
    return TrainingParts(ds=ds, train_ds=train_ds, val_ds=val_ds, instruments=instruments,
                         model=model, augment=aug, generator=generator, ctx=ctx, strategy=strategy,
                         trained=trained, params=params, agc_params=agc_params)
