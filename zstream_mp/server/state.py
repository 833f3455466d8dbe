"""What the handlers share: settings, broker, fan-out, auth, runs, replay records, connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from zstream_mp.server.auth import TokenAuth
from zstream_mp.server.broadcaster import Broadcaster
from zstream_mp.server.brokers import StreamBroker, create_broker, stream_key
from zstream_mp.server.brokers.memory import InMemoryBroker, epoch_id_base
from zstream_mp.server.config import ServerConfig
from zstream_mp.server.connections import ConnectionRegistry
from zstream_mp.server.idempotency import IdempotencyStore, MemoryIdempotency, RedisIdempotency
from zstream_mp.server.runs import RunRegistry


@dataclass
class ServerState:
    """One server's shared objects, built by `open_state` and closed by the app's lifespan."""

    config: ServerConfig
    broker: StreamBroker
    broadcaster: Broadcaster
    auth: TokenAuth
    runs: RunRegistry
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotency)
    connections: ConnectionRegistry = field(default_factory=ConnectionRegistry)

    def key(self, run_id: UUID) -> str:
        return stream_key(self.config.deployment_id, str(run_id))


async def open_state(config: ServerConfig, *, probe: bool = True) -> ServerState:
    """Create the broker and probe it (a server with an unreachable broker does not start)."""
    broker = create_broker(
        config.broker,
        max_len=config.max_stream_length,
        ttl_seconds=config.stream_ttl,
        memory_max_bytes=config.memory_max_bytes,
        memory_id_base=epoch_id_base(),
    )
    if probe and not config.disabled:
        try:
            await broker.ping()
        except Exception:
            await broker.close()
            raise
    broadcaster = Broadcaster(
        broker,
        max_subscribers=config.max_subscribers,
        max_total=config.max_subscribers_total,
        queue_size=config.subscriber_queue,
        idle_grace=config.idle_grace,
    )
    idempotency: IdempotencyStore
    writer = getattr(broker, "writer", None)
    if writer is not None:
        idempotency = RedisIdempotency(await writer(), config.deployment_id, config.idempotency_ttl)
    else:
        idempotency = MemoryIdempotency(config.idempotency_keys, config.idempotency_ttl)
    runs = RunRegistry(config.strict_runs, config.max_runs, config.stream_ttl)
    if isinstance(broker, InMemoryBroker):
        records = idempotency if isinstance(idempotency, MemoryIdempotency) else None
        broker.also_held = lambda: (
            runs.approx_bytes() + (records.approx_bytes() if records is not None else 0)
        )
    return ServerState(
        config,
        broker,
        broadcaster,
        TokenAuth(config.tokens),
        runs,
        idempotency,
        ConnectionRegistry(config.max_connections, config.header_timeout),
    )
