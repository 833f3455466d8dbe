"""Run a callback once a given module has been imported, now or later.

The ZenML integration must see a step start even when `zstream_mp` was imported before
ZenML; rather than importing ZenML itself (heavy, and a plain process must never pay for
it), it asks to be told when ZenML's module is loaded. A small meta-path finder watches for
the names asked for, lets the normal finders find the module, and runs the callbacks right
after the module's code has run. The module keeps its own loader.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
import types
from collections.abc import Callable, Sequence

from zstream_mp._forksafe import on_fork_in_child

logger = logging.getLogger("zstream_mp")

Callback = Callable[[types.ModuleType], None]

_lock = threading.Lock()
_waiting: dict[str, list[Callback]] = {}


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # never the parent's: another of its threads may have held it


on_fork_in_child("import_hook", _after_fork_in_child)


def when_imported(name: str, callback: Callback) -> None:
    """Call `callback(module)` when `name` is imported (at once if it already is)."""
    module = sys.modules.get(name)
    if module is not None:
        _call(callback, module)
        return
    with _lock:
        _waiting.setdefault(name, []).append(callback)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def _call(callback: Callback, module: types.ModuleType) -> None:
    try:
        callback(module)
    except Exception as exc:  # never break the user's import
        logger.debug("post-import hook for %s failed: %s", module.__name__, exc, exc_info=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _waiting:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        with _lock:
            callbacks = _waiting.pop(fullname, [])
        if callbacks:
            spec.loader = _Loader(spec.loader, callbacks)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, callbacks: list[Callback]) -> None:
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module keeps its real loader, whatever it is asked later.
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        for callback in self._callbacks:
            _call(callback, module)


_FINDER = _Finder()
