"""surgflow: end-to-end video learning for surgical workflow analysis.

The Python API (README, "Python API") is imported on first use, so `import surgflow` stays light:

    import surgflow
    model, cfg, meta = surgflow.load_model("runs/x")
    predictor = surgflow.OnlinePredictor(model, meta)
"""

import importlib

__version__ = "0.1.0"

# name -> (module, attribute); resolved by __getattr__ on first access (PEP 562)
_API = {
    "load_model": ("surgflow.api", "load_model"),
    "load_config": ("surgflow.api", "load_config"),
    "train": ("surgflow.api", "train"),
    "evaluate": ("surgflow.api", "evaluate"),
    "audit": ("surgflow.audit", None),  # the subpackage, callable: surgflow.audit(model)
    "synthesize": ("surgflow.api", "synthesize"),
    "prepare": ("surgflow.api", "prepare"),
    "OnlinePredictor": ("surgflow.online.predictor", "OnlinePredictor"),
    "PreparedDataset": ("surgflow.data.store", "PreparedDataset"),
    "score_phase": ("surgflow.evaluation.score", "score_phase"),
    "score_tools": ("surgflow.evaluation.score", "score_tools"),
    "score_anticipation": ("surgflow.evaluation.score", "score_anticipation"),
    "SurgflowError": ("surgflow.io_utils", "SurgflowError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        module, attr = _API[name]
        value = importlib.import_module(module)
        value = getattr(value, attr) if attr else value
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'surgflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
