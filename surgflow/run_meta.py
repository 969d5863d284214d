"""RunMeta: what a trained model needs to be used on new data, recorded in every checkpoint.

The trainer writes `RunMeta.from_training(...)`.to_dict() as the checkpoint's `meta` (primitives
only: loads with weights_only=True); readers get a RunMeta from `load_model` or `RunMeta.coerce`.
A field an older checkpoint lacks is filled from a fact the checkpoint records elsewhere (its
config, its model's preprocessing) or refused with a message; never a silent guess.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from surgflow.io_utils import SurgflowError


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
        tasks = getattr(model, "tasks", {})
        if horizon is None:
            if cfg is not None:
                horizon = cfg.task.horizon  # recorded in the checkpoint's config
            elif "anticipation" in tasks:
                horizon = tasks["anticipation"].horizon  # the model's task layer was built with it
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
