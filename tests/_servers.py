"""Moved to ``tests/helpers/`` (servers, redis, sse); this alias keeps imports written
before the move working. Remove it once nothing imports ``_servers``."""

from helpers.redis import RunningRedis, redis_binary, start_redis
from helpers.servers import (
    PREFIX,
    REPO,
    TEST_TOKEN,
    NotRunnable,
    RunningServer,
    free_port,
    start_server,
)
from helpers.sse import frames_of, sse_body

__all__ = [
    "PREFIX",
    "REPO",
    "TEST_TOKEN",
    "NotRunnable",
    "RunningRedis",
    "RunningServer",
    "frames_of",
    "free_port",
    "redis_binary",
    "sse_body",
    "start_redis",
    "start_server",
]
