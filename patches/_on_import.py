"""Run a patch when its upstream module is first imported, not before.

A runtime patch applied by ``register()`` would otherwise import its module in
every process (the CLI, the engine core, every worker), and some modules are
heavy or only belong in one of them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after ``name`` is first executed."""

    def __init__(self, name: str, patch: Callable) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_then_patch  # this module's loader only
        return spec


def patch_on_import(name: str, patch: Callable) -> bool:
    """``patch(module)`` now if ``name`` is imported, else right after its import.

    Returns what ``patch`` returned, or True when it is deferred (once)."""
    if name in sys.modules:
        return patch(sys.modules[name])
    if any(isinstance(f, _PatchOnImport) and f.name == name for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _PatchOnImport(name, patch))
    return True
