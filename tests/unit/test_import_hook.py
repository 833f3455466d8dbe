"""`_import_hook.when_imported()`: a callback once a module is imported, now or later,
without importing it and without changing how it loads. Modules are written to a temp dir."""

from __future__ import annotations

import importlib
import logging
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zstream_mp._import_hook import when_imported


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write a module with a fresh name into a temp dir on `sys.path`; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str = "VALUE = 42\n") -> str:
        name = f"zsz_hooked_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        importlib.invalidate_caches()
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_an_imported_module_is_handed_over_at_once() -> None:
    seen: list[types.ModuleType] = []
    when_imported("json", seen.append)
    assert [m.__name__ for m in seen] == ["json"]


def test_a_later_import_runs_the_callback_after_the_module_code(
    make_module: Callable[..., str],
) -> None:
    name = make_module()
    values: list[int] = []
    when_imported(name, lambda module: values.append(module.VALUE))
    assert values == [] and name not in sys.modules  # asking imports nothing
    importlib.import_module(name)
    assert values == [42]


def test_every_callback_runs_once_in_order(make_module: Callable[..., str]) -> None:
    name = make_module()
    calls: list[str] = []
    when_imported(name, lambda m: calls.append("first"))
    when_imported(name, lambda m: calls.append("second"))
    importlib.import_module(name)
    sys.modules.pop(name)
    importlib.import_module(name)  # imported again: the hooks were spent
    assert calls == ["first", "second"]


def test_the_module_keeps_its_real_loader(make_module: Callable[..., str]) -> None:
    name = make_module()
    when_imported(name, lambda m: None)
    module = importlib.import_module(name)
    assert module.__spec__ is not None
    assert type(module.__loader__).__name__ == "SourceFileLoader"
    assert module.__spec__.loader is module.__loader__
    assert importlib.reload(module).VALUE == 42


def test_a_failing_callback_never_breaks_the_import(
    make_module: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zstream_mp")
    name = make_module()
    after: list[str] = []

    def broken(module: types.ModuleType) -> None:
        raise RuntimeError("hook bug")

    when_imported(name, broken)
    when_imported(name, lambda m: after.append(m.__name__))
    module = importlib.import_module(name)
    assert module.VALUE == 42 and after == [name]
    assert any("hook bug" in r.getMessage() for r in caplog.records)


def test_a_failing_callback_for_an_imported_module_is_contained() -> None:
    def broken(module: types.ModuleType) -> None:
        raise ValueError("no")

    when_imported("json", broken)  # does not raise


def test_a_module_whose_code_fails_still_fails_and_runs_no_callback(
    make_module: Callable[..., str],
) -> None:
    name = make_module("raise ImportError('its own failure')\n")
    calls: list[str] = []
    when_imported(name, lambda m: calls.append("called"))
    with pytest.raises(ImportError, match="its own failure"):
        importlib.import_module(name)
    assert calls == []


def test_a_missing_module_stays_missing(make_module: Callable[..., str]) -> None:
    name = f"zsz_never_written_{uuid.uuid4().hex[:8]}"
    when_imported(name, lambda m: None)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)


def test_other_imports_are_untouched(make_module: Callable[..., str]) -> None:
    watched = make_module()
    other = make_module("X = 1\n")
    calls: list[str] = []
    when_imported(watched, lambda m: calls.append(m.__name__))
    module = importlib.import_module(other)
    assert calls == [] and type(module.__loader__).__name__ == "SourceFileLoader"
