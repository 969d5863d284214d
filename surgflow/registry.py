"""Name-driven registries, one per concept, all declared here (their entries register in `home`).

An entry is a factory: a function, or a class whose `from_config` classmethod is its factory (so
declared properties such as a head's `causal` are readable before anything is built). Lookups of
an unknown name raise SurgflowError naming the config key and the known names. Config choices are
the registries' names (`surgflow.config` asks `choices()`), never typed a second time.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

from surgflow.io_utils import SurgflowError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named factories whose lookups fail with the list of known names.

    kind: what an entry is ("head"); key: where a user names one ("model.head", "--layout");
    home: the module whose import registers the built-in entries (imported on first lookup)."""

    def __init__(self, kind: str, key: str = "", home: str = ""):
        self.kind, self.key, self.home = kind, key, home
        self._items: dict[str, T] = {}

    def _load(self) -> None:
        if self.home:
            importlib.import_module(self.home)  # no-op once imported (also while importing)

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._items:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def unregister(self, name: str) -> T:
        """Remove entry `name` (a plugin registered for a while, e.g. by a test); returns it."""
        self._load()
        if name not in self._items:
            raise KeyError(f"{self.kind} '{name}' is not registered")
        return self._items.pop(name)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            where = f"{self.key}: " if self.key else ""
            raise SurgflowError(f"{where}unknown {self.kind} '{name}'; known: {known}")
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call entry `name`'s factory (its `from_config` for a class that has one)."""
        entry = self.get(name)
        return getattr(entry, "from_config", entry)(*args, **kwargs)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"


# -- every concept's registry ------------------------------------------------------------------
NORM_MODES: Registry = Registry("norm mode", "model.norm", "surgflow.models.backbones")
HEADS: Registry = Registry("head", "model.head", "surgflow.models.heads")
TASKS: Registry = Registry("task", "task.tasks", "surgflow.models.tasks")
STRATEGIES: Registry = Registry("strategy", "train.strategy", "surgflow.training.strategies")
LAYOUTS: Registry = Registry("layout", "--layout", "surgflow.data.layouts")
SPLITS: Registry = Registry("split", "data.split", "surgflow.data.splits")
LR_SCHEDULES: Registry = Registry("lr schedule", "train.lr_schedule", "surgflow.training.schedules")
OPTIMIZERS: Registry = Registry("optimizer", "train.optimizer", "surgflow.training.runtime")
REGISTRIES: tuple[Registry, ...] = (NORM_MODES, HEADS, TASKS, STRATEGIES, LAYOUTS, SPLITS,
                                    LR_SCHEDULES, OPTIMIZERS)


def choices() -> dict[str, tuple[str, ...]]:
    """Config key -> allowed names, checked when a config loads. model.head is checked by
    HEADS.get when the model is built, data.split (a name or a file) where it is resolved."""
    return {r.key: tuple(r.names()) for r in (NORM_MODES, TASKS, STRATEGIES, LR_SCHEDULES,
                                              OPTIMIZERS)}
