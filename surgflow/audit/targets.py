"""What `surgflow audit` and `surgflow.audit(...)` audit: a model, a run directory or checkpoint,
or a preset/YAML config (built with random weights: the leaks tested are structural)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from surgflow.config import ConfigError, load_config, resolve_config_path
from surgflow.io_utils import SurgflowError
from surgflow.runs import load_model


def load_target(target: str, overrides: list[str], which: str = "kept", with_config: bool = False):
    """(model, description) from a YAML config, a run directory or a checkpoint file; with_config:
    (model, description, cfg) where cfg is the config as audited (None for a checkpoint), for the
    input-path audit."""
    path = Path(target)
    if not path.exists():
        try:
            path = resolve_config_path(target)  # a preset name
        except ConfigError:
            raise SurgflowError(f"{target} does not exist; pass a YAML config or preset name (see "
                                "`surgflow configs`), a run directory written by `surgflow train`, "
                                "or a checkpoint .pt file") from None
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        from surgflow.models.model import build_model  # heavy: torch, for a YAML config only

        from surgflow.models.heads import HEADS  # heavy: torch, for a YAML config only

        cfg = load_config(path, overrides)
        cfg.model.pretrained = False  # random weights: the leaks tested are structural
        note = ""
        if cfg.task.online and cfg.model.head in HEADS and not HEADS.get(cfg.model.head).causal:
            # build_model refuses this combination; build it offline to show why
            cfg.task.online = False
            note = (f" (head '{cfg.model.head}' is not causal: training refuses it with "
                    "task.online: true; audited as built with task.online: false)")
        model = build_model(cfg, num_phases=7, num_tools=7,
                            num_instruments=len(cfg.task.instruments))
        return (model.eval(), f"config {path}{note}") + ((cfg,) if with_config else ())
    if overrides:
        raise SurgflowError("--set applies to a YAML config only; a checkpoint is audited with "
                            "the config it was trained with")

    try:
        model, cfg, meta = load_model(path, which=which, device="cpu")
    except SurgflowError:
        raise
    except Exception as e:  # a checkpoint from another program or version
        raise SurgflowError(
            f"{path}: cannot rebuild a model from this checkpoint ({type(e).__name__}: {e}); pass "
            "a run directory or checkpoint written by `surgflow train`, or the YAML config the "
            "model was trained with (the audit works with random weights)") from e
    return (model, f"checkpoint {path}") + ((None,) if with_config else ())


def audit(target: Any, input_shape: Optional[Sequence[int]] = None,
          modes: Sequence[str] = ("train", "eval"), seed: int = 0, checkpoint: str = "kept"):
    """BatchNorm-leakage audit of a model (torch module), a run directory / checkpoint, or a
    preset/YAML config. Returns an AuditReport (.leaks, .findings, .format(), .to_dict())."""
    import torch  # heavy: torch; api.py and the audit package import this module

    from surgflow.audit.audit import audit_model  # heavy: torch (audit.audit)

    if not isinstance(target, torch.nn.Module):
        target, _source = load_target(str(target), [], checkpoint)
    return audit_model(target, input_shape=input_shape, modes=modes, seed=seed)
