"""Server settings, validated at construction so a bad flag fails before the port opens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_PORT = 8237
MAX_REQUEST_BODY = 256 * 1024 * 1024  # ZenML's default; larger bodies get a bare 413


@dataclass(frozen=True)
class ServerConfig:
    """Everything `zstream-mp serve` can set; tokens map to their rights and stay out of repr."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    broker: str = "memory"
    tokens: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)
    disabled: bool = False
    strict_runs: bool = False
    heartbeat: float = 30.0
    max_subscribers: int = 100
    subscriber_queue: int = 1024
    max_stream_length: int = 10_000
    stream_ttl: float = 3600.0
    deployment_id: str = "zstream-mp"
    max_request_body: int = MAX_REQUEST_BODY
    idle_grace: float = 5.0
    access_log: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("heartbeat", "stream_ttl", "idle_grace"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_subscribers", "subscriber_queue", "max_stream_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_request_body < 1:
            raise ValueError("max_request_body must be >= 1")
        if not (self.broker == "memory" or "://" in self.broker):
            raise ValueError(f"broker must be 'memory' or a redis:// URL, got {self.broker!r}")
