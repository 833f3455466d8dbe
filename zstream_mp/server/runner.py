"""Running the app under uvicorn: in the foreground (CLI) or in a background thread
(`EmbeddedServer`: the demo, the benchmarks, the tests).

The listening socket is bound before uvicorn starts, so `--port 0` can report its real
port, and the broker is probed first, so a server that prints its URL is ready to use.
On SIGINT/SIGTERM every subscriber gets `gap: shutdown` then `end` before connections close.
SIGHUP re-reads the tokens file (`reload.py`) instead of ending the process. The connection
cap is fitted to the open-file limit (raised towards it first), so accepting never fails
for want of a descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

import uvicorn

from zstream_mp._sender import THREAD_PREFIX
from zstream_mp.server.app import create_app
from zstream_mp.server.config import ServerConfig
from zstream_mp.server.connections import quiet_accept_errors
from zstream_mp.server.reload import watch_sighup
from zstream_mp.server.state import ServerState, open_state

logger = logging.getLogger("zstream_mp.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when the host is an IPv6 literal)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only for sockets whose proto says TCP,
    # and with Nagle on every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


_FD_RESERVE = 160
"""Descriptors kept for everything but client connections: the listening socket, broker
pools (Redis: 64 + 32 + 1), log and state files."""
LISTEN_BACKLOG = 2048
ACCEPT_BURST = 128
"""Connections asyncio accepts in one go before any protocol runs (its `backlog`): they
hold descriptors before the cap can act on them (and evicted ones close a loop turn
later), so the cap leaves room for two bursts.
The kernel's queue stays `LISTEN_BACKLOG` long (restored after uvicorn's `listen`)."""


def fit_connection_cap(wanted: int) -> int:
    """`wanted`, or less when the open-file limit cannot be raised to hold it."""
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _FD_RESERVE + 2 * ACCEPT_BURST
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    return max(1, min(wanted, soft - _FD_RESERVE - 2 * ACCEPT_BURST))


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn server that ends SSE subscribers first, so shutdown does not wait on them."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        for sock in sockets or ():
            with contextlib.suppress(OSError):  # uvicorn listened with ACCEPT_BURST
                sock.listen(LISTEN_BACKLOG)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.request_stop()
        super().handle_exit(sig, frame)

    def request_stop(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.state.broadcaster.shut_down)
        self.should_exit = True


def _uvicorn_config(state: ServerState) -> uvicorn.Config:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return uvicorn.Config(
        create_app(state),
        http=state.connections.protocol_class(AutoHTTPProtocol),
        lifespan="on",
        access_log=state.config.access_log,
        log_level="warning",
        timeout_graceful_shutdown=5,
        backlog=ACCEPT_BURST,
        ws="none",
        server_header=False,
    )


async def serve(
    config: ServerConfig,
    on_ready: Callable[[str], None] | None = None,
    on_server: Callable[[_Server], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Probe the broker, bind, report the URL through `on_ready`, then serve until stopped.

    `sock`: serve on this listening socket instead (a `--workers` worker shares its parent's).
    """
    state = await open_state(config)
    cap = fit_connection_cap(config.max_connections)
    if cap < config.max_connections:
        logger.warning(
            "connection cap lowered from %d to %d to fit the open-file limit (ulimit -n)",
            config.max_connections,
            cap,
        )
        state.connections.max_connections = cap
    sock = sock if sock is not None else bind_socket(config.host, config.port)
    server = _Server(_uvicorn_config(state), state)
    server.loop = asyncio.get_running_loop()
    watch_sighup(server.loop, state)
    quiet_accept_errors()
    if on_server is not None:
        on_server(server)
    if on_ready is not None:
        on_ready(url_of(sock))
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


def serve_in_own_process(
    config: ServerConfig,
    on_ready: Callable[[str], None] | None = None,
    on_server: Callable[[_Server], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """`serve` in a process that does nothing else (`zstream-mp serve`, a `--workers`
    worker), its startup heap frozen first.

    `gc.freeze()` moves every object alive after the imports (modules, classes, the
    frameworks' tables) out of the collector's reach, so the collections that ingest's
    allocations trigger scan only what requests allocated: without it a full collection
    stalled a POST for 30-50 ms every few batches of 1,000. Not done by `EmbeddedServer`:
    its process is the caller's, whose heap is not ours to freeze.
    """
    gc.collect()
    gc.freeze()
    asyncio.run(serve(config, on_ready=on_ready, on_server=on_server, sock=sock))


class EmbeddedServer:
    """A server on a free loopback port in a background thread; `.url` while entered.

    >>> with EmbeddedServer(ServerConfig(port=0)) as srv:
    ...     print(srv.url)
    """

    def __init__(self, config: ServerConfig | None = None, *, start_timeout: float = 10.0) -> None:
        self.config = config or ServerConfig(port=0)
        self.url = ""
        self._timeout = start_timeout
        self._ready = threading.Event()
        self._server: _Server | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _main(self) -> None:
        def ready(url: str) -> None:
            self.url = url
            self._ready.set()

        def keep(server: _Server) -> None:
            self._server = server

        try:
            asyncio.run(serve(self.config, on_ready=ready, on_server=keep))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    def start(self) -> EmbeddedServer:
        self._thread = threading.Thread(
            target=self._main, name=f"{THREAD_PREFIX}server", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError("embedded server did not start in time")
        if self._error is not None:
            raise RuntimeError(f"embedded server failed to start: {self._error}") from self._error
        server = self._server
        while server is not None and not server.started and self._thread.is_alive():
            threading.Event().wait(0.01)
        return self

    @property
    def state(self) -> ServerState:
        """The running server's shared objects (for inspection; use from the loop's thread)."""
        if self._server is None:
            raise RuntimeError("embedded server is not running")
        return self._server.state

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
