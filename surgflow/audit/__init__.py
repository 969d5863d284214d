"""BatchNorm audits (audit.py) and guards (guards.py).

`surgflow.audit` is both this package and the API call `surgflow.audit(model_or_run)` (see
surgflow/audit/targets.py): the package is made callable so the two names cannot shadow each
other."""
import sys as _sys
import types as _types

# the module, not its `audit` function: a package attribute `audit` would hide the submodule audit.py
from surgflow.audit import targets as _targets


class _CallablePackage(_types.ModuleType):
    def __call__(self, target, *args, **kwargs):
        return _targets.audit(target, *args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
