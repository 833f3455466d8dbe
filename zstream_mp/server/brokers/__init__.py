"""Stream brokers: where published frames live between POST and SSE."""

from __future__ import annotations

from zstream_mp.errors import BrokerConnectionError, BrokerFullError
from zstream_mp.server.brokers.base import BrokerEntry, StreamBroker


def stream_key(deployment_id: str, run_id: str) -> str:
    """ZenML's key layout, so a ZenML server with the same deployment id sees the same data."""
    return f"zenml:stream:server:{deployment_id}:run:{run_id}"


def create_broker(
    spec: str,
    *,
    max_len: int = 10_000,
    ttl_seconds: float = 3600.0,
    memory_max_bytes: int = 256 * 1024 * 1024,
    memory_id_base: int = 0,
) -> StreamBroker:
    """`memory` or a `redis://` / `rediss://` / `unix://` URL (`memory_id_base`: see
    `InMemoryBroker`; the server passes `epoch_id_base()`)."""
    if spec == "memory":
        from zstream_mp.server.brokers.memory import InMemoryBroker

        return InMemoryBroker(
            max_len=max_len,
            ttl_seconds=ttl_seconds,
            max_bytes=memory_max_bytes,
            id_base=memory_id_base,
        )
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from zstream_mp.server.brokers.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker(spec, max_len=max_len, ttl_seconds=max(1, int(ttl_seconds)))
    raise ValueError(f"unknown broker {spec!r}: use 'memory' or a redis:// URL")


__all__ = [
    "BrokerConnectionError",
    "BrokerEntry",
    "BrokerFullError",
    "StreamBroker",
    "create_broker",
    "stream_key",
]
