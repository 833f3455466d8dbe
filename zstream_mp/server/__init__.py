"""The wire-compatible streaming server (optional extra: `pip install zstream-mp[server]`).

`create_app`/`open_state` build the ASGI app; `EmbeddedServer` runs one in a background
thread; `zstream-mp serve` runs one in the foreground.
"""

from __future__ import annotations

from zstream_mp.server.app import create_app
from zstream_mp.server.config import ServerConfig
from zstream_mp.server.runner import EmbeddedServer, serve
from zstream_mp.server.state import ServerState, open_state

__all__ = ["EmbeddedServer", "ServerConfig", "ServerState", "create_app", "open_state", "serve"]
