"""The optional frameworks: imported only when an integration is used, with a clear error."""

from __future__ import annotations

import importlib
from types import ModuleType

from zstream_mp.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` telling how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"zstream_mp.integrations.{extra} needs {module!r}: "
            f"pip install 'zstream-mp[{extra}]' ({exc})",
            name=module,
        ) from exc
