"""Server settings and limits, validated at construction so a bad flag fails before the port opens.

Every limit a client can run into is a field here, with its default; the README's "Limits
and failure modes" table says what a client sees when it is hit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from zstream_mp._wire import BATCH_BODY_MAX, DEFAULT_PORT

MAX_CONNECTIONS = 4096
"""Open connections one server process keeps by default (`serve --max-connections`)."""


def redact_url(url: str) -> str:
    """A broker URL with its password hidden."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return url


@dataclass(frozen=True)
class ServerConfig:
    """Everything `zstream-mp serve` can set; credentials never appear in its repr."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    broker: str = "memory"
    tokens: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)
    disabled: bool = False
    strict_runs: bool = False
    heartbeat: float = 30.0
    max_subscribers: int = 100
    """Per run, as ZenML's `streaming_max_subscribers_per_stream`."""
    max_subscribers_total: int = 10_000
    """Per server process, all runs together."""
    subscriber_queue: int = 1024
    max_stream_length: int = 10_000
    stream_ttl: float = 3600.0
    deployment_id: str = "zstream-mp"
    max_request_body: int = BATCH_BODY_MAX
    """Bytes of one POST body: what 1,000 events at the envelope limit need."""
    idle_grace: float = 5.0
    access_log: bool = False
    sse_write_timeout: float = 30.0
    """Seconds one SSE write may wait for a client that stopped reading before it is cut off."""
    memory_max_bytes: int = 256 * 1024 * 1024
    """Memory broker only: frame bytes held over all streams; above it POST gets 503."""
    max_runs: int = 100_000
    """Runs remembered as created or ended; the oldest are forgotten first."""
    idempotency_keys: int = 100_000
    """Idempotency records kept in memory (memory broker); the oldest are forgotten first."""
    idempotency_ttl: float = 3600.0
    """Seconds an idempotency record is kept (in Redis with the Redis broker)."""
    max_body_containers: int = 250_000
    """JSON arrays and objects one POST body may hold (each costs ~64 bytes and ~0.6 µs to
    parse): bounds the memory and the event-loop time of one parse."""
    max_connections: int = MAX_CONNECTIONS
    """Open connections per server process; above it the oldest connection that has not
    sent a whole request head is dropped (else the new one). Lowered to fit the process's
    open-file limit."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a whole request head (and may stay idle
    between requests) before it is dropped."""
    body_timeout: float = 60.0
    """Seconds a request body may take to arrive in full; then 408."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names accepted in `Host` (and `Origin`) besides the loopback names and the bind
    address; `*` accepts any."""
    tokens_file: str | None = None
    """Where `tokens` came from (re-read on SIGHUP)."""
    flag_tokens: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)
    """The `--token` token, kept across a SIGHUP reload of the file."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in (
            "heartbeat",
            "stream_ttl",
            "idle_grace",
            "sse_write_timeout",
            "header_timeout",
            "body_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not self.idempotency_ttl >= 1:
            raise ValueError("idempotency_ttl must be >= 1")
        for name in (
            "max_subscribers",
            "max_subscribers_total",
            "subscriber_queue",
            "max_stream_length",
            "max_runs",
            "idempotency_keys",
            "max_body_containers",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_request_body < 1:
            raise ValueError("max_request_body must be >= 1")
        if self.broker == "memory" and self.memory_max_bytes < self.max_request_body:
            raise ValueError("memory_max_bytes must be >= max_request_body (one full batch)")
        if not (self.broker == "memory" or "://" in self.broker):
            raise ValueError(
                f"broker must be 'memory' or a redis:// URL, got {redact_url(self.broker)!r}"
            )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "broker":
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        shown.append(f"tokens=<{len(self.tokens)} token(s)>")
        return f"ServerConfig({', '.join(shown)})"
