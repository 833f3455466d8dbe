"""The server every example uses: `ZSTREAM_SERVER` (with `ZSTREAM_TOKEN`), else one of
its own on a free loopback port, alive while the example runs.

To watch an example on the live page after it ends, start `zstream-mp serve` elsewhere
and point the example at it: `ZSTREAM_SERVER=http://127.0.0.1:8237 python examples/...`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def server() -> Iterator[tuple[str, str | None]]:
    """Yield `(url, token)`: the configured server, or an embedded one (server extra)."""
    url = os.environ.get("ZSTREAM_SERVER")
    if url:
        yield url.rstrip("/"), os.environ.get("ZSTREAM_TOKEN") or None
        return
    try:
        from zstream_mp.server import EmbeddedServer
    except ImportError:
        sys.exit("set ZSTREAM_SERVER, or pip install 'zstream-mp[server]' for an embedded server")
    with EmbeddedServer() as embedded:
        yield embedded.url, None


def show(url: str, run_id: str) -> None:
    """Print where to watch the run: the live page and the terminal view."""
    print(f"run {run_id}")
    print(f"  live page: {url}/runs/{run_id}")
    print(f"  terminal:  zstream-mp tail {run_id} --server {url} --live", flush=True)
