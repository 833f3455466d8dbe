"""The ASGI app: ZenML's two streaming endpoints, plus /health and a small run lifecycle API.

Beyond ZenML: a repeated `Idempotency-Key` on POST .../events returns the stored answer
instead of appending the batch again (see `idempotency.py`), and ending a run always
appends the `end` frame, even to an empty stream, so no subscriber waits forever.

Each handler checks in ZenML's dependency order: JSON decode (422), auth (401/403),
streaming enabled (501), validation of path, query and body (422), then handler logic
(404/400/413/503). Error bodies copy ZenML's three shapes: `{"detail": "..."}`,
`{"detail": ["ExcType", "msg"]}` and the top-level 422 list `["ValueError", "..."]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import anyio
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zstream_mp.server import run_api, ui
from zstream_mp.server.auth import TokenAuth
from zstream_mp.server.broadcaster import Broadcaster, ShuttingDownError, StreamCapacityError
from zstream_mp.server.brokers import StreamBroker, create_broker, stream_key
from zstream_mp.server.config import ServerConfig
from zstream_mp.server.framing import END, PING, EventFilter, frame_for
from zstream_mp.server.idempotency import IdempotencyCache
from zstream_mp.server.models import (
    END_FRAME_BYTES,
    ENVELOPE_BYTES_MAX,
    RESERVED_KINDS,
    EventFrame,
    StreamBatchRequest,
    encode_frame,
    parse_uuid,
)
from zstream_mp.server.runs import RunRegistry, not_found_message

logger = logging.getLogger("zstream_mp.server")

CACHE_CONTROL = "no-store, no-cache, must-revalidate"
SSE_HEADERS = {"Cache-Control": CACHE_CONTROL, "X-Accel-Buffering": "no"}
_DISABLED = "Live event streaming is not enabled on this server."
_batch_adapter: TypeAdapter[StreamBatchRequest] = TypeAdapter(StreamBatchRequest)


@dataclass
class ServerState:
    """What the handlers share: settings, broker, fan-out, auth and the run registry."""

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


# -- error bodies ----------------------------------------------------------------------
def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _unavailable(detail: str) -> JSONResponse:
    return _detail(503, detail, {"Retry-After": "5"})


def _endpoint_context(func: Callable[..., Any], route: str) -> str:
    code = inspect.unwrap(func).__code__
    return (
        f'\n  File "{code.co_filename}", line {code.co_firstlineno}, in {code.co_name}\n    {route}'
    )


def _validation_error(errors: list[dict[str, Any]], context: str) -> JSONResponse:
    """FastAPI's `RequestValidationError` text inside ZenML's top-level 422 list."""
    n = len(errors)
    text = f"{n} validation error{'s' if n != 1 else ''}:\n"
    text += "".join(f"  {err}\n" for err in errors)
    text = (text + context).rstrip()
    return JSONResponse(["ValueError", text], status_code=422)


def _prefixed(exc: ValidationError, *prefix: Any) -> list[dict[str, Any]]:
    return [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]


class _BodyTooLarge(Exception):
    pass


class _ParseError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request, limit: int, context: str) -> Any:
    """The body as FastAPI hands it to validation: parsed JSON, raw bytes, or None."""
    raw = await _read_body(request, limit)
    if not raw:
        return None
    content_type = request.headers.get("content-type")
    if not content_type:
        return raw
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return raw
    subtype = message.get_content_subtype()
    if not (subtype == "json" or subtype.endswith("+json")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise _ParseError(_validation_error([error], context)) from exc
    except Exception as exc:  # bad UTF-8, nesting too deep, ...
        raise _ParseError(_detail(400, "There was an error parsing the body")) from exc


def _path_run_id(request: Request) -> tuple[UUID | None, list[dict[str, Any]]]:
    try:
        return parse_uuid(request.path_params["run_id"]), []
    except ValidationError as exc:
        return None, _prefixed(exc, "path", "pipeline_run_id")


class App:
    """Request handlers bound to one `ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._publish_ctx = _endpoint_context(
            App.publish_run_events, "POST /api/v1/runs/{pipeline_run_id}/events"
        )
        self._stream_ctx = _endpoint_context(
            App.stream_run_events, "GET /api/v1/runs/{pipeline_run_id}/events/stream"
        )
        self._create_ctx = _endpoint_context(App.create_run, "POST /api/v1/zstream/runs")
        self._end_ctx = _endpoint_context(App.end_run, "POST /api/v1/zstream/runs/{run_id}/end")

    # -- shared checks -----------------------------------------------------------------
    def _authorize(self, request: Request, right: str) -> Response | None:
        auth = self.state.auth
        if not auth.enabled:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer":
            return _detail(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        rights = auth.rights(token.strip())
        if rights is None:
            return _detail(
                401, ["CredentialsNotValid", "Authentication error: invalid bearer token."]
            )
        if right not in rights:
            return _detail(
                403, ["IllegalOperationError", f"This token does not have the '{right}' right."]
            )
        return None

    def _gate(self, request: Request, right: str) -> Response | None:
        denied = self._authorize(request, right)
        if denied is not None:
            return denied
        if self.state.config.disabled:
            return _detail(501, _DISABLED)
        return None

    def _unknown_run(self, run_id: UUID) -> Response | None:
        if self.state.runs.known(run_id):
            return None
        return _detail(404, ["KeyError", not_found_message(run_id)])

    def _run_of(self, request: Request, right: str, context: str) -> UUID | Response:
        """The path's run, or the refusal: auth (401/403/501), validation (422), lookup (404)."""
        gate = self._gate(request, right)
        if gate is not None:
            return gate
        run_id, errors = _path_run_id(request)
        if errors or run_id is None:
            return _validation_error(errors, context)
        return self._unknown_run(run_id) or run_id

    async def _body(self, request: Request, context: str) -> Any:
        return await _json_body(request, self.state.config.max_request_body, context)

    # -- POST /api/v1/runs/{run_id}/events -----------------------------------------------
    async def publish_run_events(self, request: Request) -> Response:
        body = await self._body(request, self._publish_ctx)
        gate = self._gate(request, "write")
        if gate is not None:
            return gate
        run_id, errors = _path_run_id(request)
        batch: StreamBatchRequest | None = None
        if body is None:
            errors.append(
                {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
            )
        else:
            try:
                batch = _batch_adapter.validate_python(body, from_attributes=True)
            except ValidationError as exc:
                errors.extend(_prefixed(exc, "body"))
        if errors or run_id is None or batch is None:
            return _validation_error(errors, self._publish_ctx)
        missing = self._unknown_run(run_id)
        if missing is not None:
            return missing
        if not batch.events:
            return JSONResponse({"count": 0, "last_id": None})
        payloads: list[bytes] = []
        for event in batch.events:
            if event.pipeline_run_id != run_id:
                return _detail(
                    400,
                    [
                        "ValueError",
                        f"Event pipeline_run_id {event.pipeline_run_id} does not "
                        f"match URL run id {run_id}.",
                    ],
                )
            if event.kind in RESERVED_KINDS:
                return _detail(
                    400,
                    [
                        "ValueError",
                        f"Event kind {event.kind!r} collides with a reserved SSE "
                        f"control name ({sorted(RESERVED_KINDS)})",
                    ],
                )
            try:
                payload = encode_frame(EventFrame(event=event))
            except ValueError as exc:  # lone surrogates: JSON allows them, UTF-8 does not
                # ZenML maps ValueError subclasses to its last ValueError entry: 422
                return _detail(422, ["ValueError", str(exc)])
            if len(payload) > ENVELOPE_BYTES_MAX:
                return _detail(
                    413, f"Event exceeds {ENVELOPE_BYTES_MAX} bytes (was {len(payload)})."
                )
            payloads.append(payload)
        key = request.headers.get("idempotency-key")
        cache = self.state.idempotency
        if key:
            stored = await cache.claim(str(run_id), key)
            if stored is not None:
                return JSONResponse(stored)
        result: dict[str, Any] | None = None
        try:
            ids = await self.state.broker.publish(self.state.key(run_id), payloads)
            result = {"count": len(ids), "last_id": ids[-1] if ids else None}
            self.state.runs.touch(run_id)
        except Exception as exc:
            logger.warning("broker publish failed for run %s: %s", run_id, exc)
            return _unavailable("Broker publish failed.")
        finally:
            if key:
                cache.finish(str(run_id), key, result)
        return JSONResponse(result)

    # -- GET /api/v1/runs/{run_id}/events/stream ---------------------------------------
    async def stream_run_events(self, request: Request) -> Response:
        run_id = self._run_of(request, "read", self._stream_ctx)
        if isinstance(run_id, Response):
            return run_id
        query = request.query_params
        event_filter = EventFilter.of(
            query.getlist("kinds"), query.getlist("step_names"), query.getlist("correlation_ids")
        )
        from_id = request.headers.get("last-event-id") or query.get("since")
        broker = self.state.broker
        if from_id is not None:
            try:
                broker.validate_cursor(from_id)
            except ValueError as exc:
                return _detail(400, ["ValueError", str(exc)])
        key = self.state.key(run_id)
        if self.state.runs.ended(run_id):
            try:
                latest = await broker.latest_id(key)
            except Exception:
                pass
            else:
                if latest is None or (from_id is not None and from_id == latest):
                    return SSEResponse(
                        _single(END), media_type="text/event-stream", headers=SSE_HEADERS
                    )
        broadcaster = self.state.broadcaster
        try:
            sub = await broadcaster.subscribe(key, from_id)
        except ShuttingDownError:
            return _unavailable("Server is shutting down.")
        except StreamCapacityError:
            return _unavailable(
                "This pipeline run has reached the per-run subscriber cap "
                f"({broadcaster.max_subscribers}); retry shortly or close an existing subscriber."
            )
        except Exception as exc:
            logger.warning("subscribe failed for run %s: %s", run_id, exc)
            return _unavailable("Stream broker is currently unavailable.")
        heartbeat = self.state.config.heartbeat

        async def frames() -> AsyncIterator[bytes]:
            try:
                while True:
                    item = await sub.next(heartbeat)
                    if item is None:
                        yield PING
                        continue
                    frame, terminal = frame_for(item, event_filter)
                    yield frame
                    if terminal:
                        return
                    await asyncio.sleep(0)  # replay may never suspend: let the loop breathe
            finally:
                sub.close()

        return SSEResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)

    # -- run lifecycle (not in ZenML) ---------------------------------------------------
    async def create_run(self, request: Request) -> Response:
        body = await self._body(request, self._create_ctx)
        gate = self._gate(request, "write")
        if gate is not None:
            return gate
        run_id: UUID = uuid4()
        if body is not None:
            if not isinstance(body, dict):
                error = {
                    "type": "dict_type",
                    "loc": ("body",),
                    "msg": "Input should be a valid dictionary",
                    "input": body,
                }
                return _validation_error([error], self._create_ctx)
            if body.get("id") is not None:
                try:
                    run_id = (
                        parse_uuid(body["id"])
                        if isinstance(body["id"], str)
                        else TypeAdapter(UUID).validate_python(body["id"])
                    )
                except ValidationError as exc:
                    return _validation_error(_prefixed(exc, "body", "id"), self._create_ctx)
        created = self.state.runs.create(run_id)
        return JSONResponse({"id": str(run_id)}, status_code=201 if created else 200)

    async def end_run(self, request: Request) -> Response:
        run_id = self._run_of(request, "write", self._end_ctx)
        if isinstance(run_id, Response):
            return run_id
        runs = self.state.runs
        if runs.ended(run_id):
            return JSONResponse({"id": str(run_id), "ended": True})
        try:
            await self.state.broker.publish(self.state.key(run_id), [END_FRAME_BYTES])
        except Exception as exc:
            logger.warning("broker publish of end failed for run %s: %s", run_id, exc)
            return _unavailable("Broker publish failed.")
        runs.mark_ended(run_id)
        return JSONResponse({"id": str(run_id), "ended": True})


class SSEResponse(StreamingResponse):
    """A streaming response that stops its generator as soon as the client goes away.

    Starlette relies on `send` failing for ASGI 2.4 servers, but a write to a dead socket
    can succeed silently while the loop has not yet processed the connection loss. A
    subscriber would then linger (and count against the per-run cap). Listening for
    `http.disconnect` alongside the writer ends it promptly.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def write() -> None:
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(write)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def _single(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def _guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """No input ever yields a 500: body problems map to ZenML's answers, the rest to 400."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _BodyTooLarge:
            return Response(status_code=413)
        except _ParseError as exc:
            return exc.response
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception as exc:
            logger.exception("unexpected error handling %s %s", request.method, request.url.path)
            return _detail(400, [type(exc).__name__, str(exc)])

    return endpoint


class _ZenMLHeaders:
    """Bare 413 above the body limit (by Content-Length) and ZenML's Cache-Control on all."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_body
                except ValueError:
                    too_large = False
                if too_large:
                    await Response(status_code=413)(scope, receive, send)
                    return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", CACHE_CONTROL.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(state: ServerState) -> Starlette:
    """The Starlette app; its lifespan shuts subscribers down and closes the broker."""
    handlers = App(state)
    runs = run_api.RunAPI(state, handlers._gate)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.broadcaster.shut_down()
            await state.broker.close()

    routes = [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route(
            "/api/v1/runs/{run_id}/events", _guarded(handlers.publish_run_events), methods=["POST"]
        ),
        Route(
            "/api/v1/runs/{run_id}/events/stream",
            _guarded(handlers.stream_run_events),
            methods=["GET"],
        ),
        *runs.routes(_guarded, handlers.create_run),
        Route("/api/v1/zstream/runs/{run_id}/end", _guarded(handlers.end_run), methods=["POST"]),
    ]
    routes += ui.routes(state, _guarded(handlers.stream_run_events), runs, _guarded)
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_ZenMLHeaders, max_body=state.config.max_request_body)
    return app
