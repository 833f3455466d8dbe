"""`integrations/_extras.require()`: an optional framework, or an error saying how to get it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zstream_mp.errors import MissingExtraError, ZStreamError
from zstream_mp.integrations._extras import require


def test_an_installed_module_is_returned() -> None:
    assert require("json", "ray") is json


def test_a_missing_module_says_which_extra_installs_it() -> None:
    with pytest.raises(MissingExtraError) as info:
        require("zsz_no_such_framework", "dask")
    message = str(info.value)
    assert "zstream_mp.integrations.dask" in message
    assert "pip install 'zstream-mp[dask]'" in message
    assert "'zsz_no_such_framework'" in message
    assert info.value.name == "zsz_no_such_framework"
    assert isinstance(info.value.__cause__, ImportError)


def test_the_error_is_both_ours_and_an_import_error() -> None:
    """Callers catching `ImportError` (the usual way to probe an optional dependency) see it."""
    with pytest.raises(ImportError):
        require("zsz_no_such_framework", "ray")
    with pytest.raises(ZStreamError):
        require("zsz_no_such_framework", "ray")


def test_a_module_that_fails_while_importing_is_reported_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    folder = tmp_path
    (folder / "zsz_broken_framework.py").write_text("import zsz_its_missing_dependency\n")
    monkeypatch.syspath_prepend(str(folder))
    with pytest.raises(MissingExtraError, match="zsz_its_missing_dependency"):
        require("zsz_broken_framework", "ray")
