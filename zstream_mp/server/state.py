"""What the handlers share: settings, broker, fan-out, auth, the run registry, replay cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from zstream_mp.server.auth import TokenAuth
from zstream_mp.server.broadcaster import Broadcaster
from zstream_mp.server.brokers import StreamBroker, create_broker, stream_key
from zstream_mp.server.config import ServerConfig
from zstream_mp.server.idempotency import IdempotencyCache
from zstream_mp.server.runs import RunRegistry


@dataclass
class ServerState:
    """One server's shared objects, built by `open_state` and closed by the app's lifespan."""

    config: ServerConfig
    broker: StreamBroker
    broadcaster: Broadcaster
    auth: TokenAuth
    runs: RunRegistry
    idempotency: IdempotencyCache = field(default_factory=IdempotencyCache)

    def key(self, run_id: UUID) -> str:
        return stream_key(self.config.deployment_id, str(run_id))


async def open_state(config: ServerConfig, *, probe: bool = True) -> ServerState:
    """Create the broker and probe it (a server with an unreachable broker does not start)."""
    broker = create_broker(
        config.broker, max_len=config.max_stream_length, ttl_seconds=config.stream_ttl
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
        queue_size=config.subscriber_queue,
        idle_grace=config.idle_grace,
    )
    return ServerState(
        config, broker, broadcaster, TokenAuth(config.tokens), RunRegistry(config.strict_runs)
    )
