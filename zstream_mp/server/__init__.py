"""The wire-compatible streaming server (optional extra: `pip install zstream-mp[server]`).

`create_app`/`open_state` build the ASGI app; `EmbeddedServer` runs one in a background
thread; `zstream-mp serve` runs one in the foreground. The names load on first use, so
reading `zstream_mp.server.config` (the CLI's `--help`) does not import Starlette.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zstream_mp.server.app import create_app
    from zstream_mp.server.config import ServerConfig
    from zstream_mp.server.runner import EmbeddedServer, serve
    from zstream_mp.server.state import ServerState, open_state

_WHERE = {
    "create_app": "zstream_mp.server.app",
    "ServerConfig": "zstream_mp.server.config",
    "EmbeddedServer": "zstream_mp.server.runner",
    "serve": "zstream_mp.server.runner",
    "ServerState": "zstream_mp.server.state",
    "open_state": "zstream_mp.server.state",
}

__all__ = ["EmbeddedServer", "ServerConfig", "ServerState", "create_app", "open_state", "serve"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
