"""Run a function right after a module is first imported: how hf_oto registers with transformers lazily.

`import hf_oto` must stay cheap, but the `"question-answering"` pipeline can only be registered in
``transformers.pipelines``, whose import costs seconds. `call_after_import` runs the registration when
that module is imported (by ``transformers.pipeline(...)``, for example), or at once when it already is.
The module's own loader runs it; the hook only appends the call after the module's code has run.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_LOCK = threading.Lock()


class _CallAfterLoader(importlib.abc.Loader):
    """Delegates to the module's own loader, then calls the waiting functions with the loaded module."""

    def __init__(self, loader: importlib.abc.Loader, callbacks: list[Callable[[ModuleType], None]]) -> None:
        self._loader, self._callbacks = loader, callbacks

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for callback in self._callbacks:
            callback(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... for tracebacks and tools
        return getattr(self._loader, name)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """On `sys.meta_path`: finds nothing itself; wraps the loader of the watched modules when they are imported."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[Callable[[ModuleType], None]]] = {}

    def find_spec(self, fullname: str, path=None, target=None):
        with _LOCK:
            callbacks = self.waiting.pop(fullname, None)
        if callbacks is None:
            return None
        spec = next(
            (
                found
                for finder in sys.meta_path
                if finder is not self and hasattr(finder, "find_spec")
                for found in [finder.find_spec(fullname, path, target)]
                if found is not None
            ),
            None,
        )
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # not importable (or a legacy loader): the import proceeds, or fails, as without us
        spec.loader = _CallAfterLoader(spec.loader, callbacks)
        return spec


_FINDER = _AfterImportFinder()


def call_after_import(module_name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once `module_name` has been imported: now if it already is, else right after
    its first import (in the importing thread, before the importer gets the module)."""
    if module_name in sys.modules:
        callback(sys.modules[module_name])
        return
    with _LOCK:
        _FINDER.waiting.setdefault(module_name, []).append(callback)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
