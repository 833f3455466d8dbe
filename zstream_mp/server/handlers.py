"""The handlers of every endpoint: ZenML's publish and stream, and the run lifecycle API.

Beyond ZenML: a repeated `Idempotency-Key` on POST .../events returns the stored answer
instead of appending the batch again (see `idempotency.py`), and ending a run always
appends the `end` frame, even to an empty stream, so no subscriber waits forever.

Each handler checks auth (401/403) and streaming enabled (501) before it reads a body byte,
then as ZenML: JSON decode and validation of path, query and body (422), then handler logic
(404/400/413/503). (ZenML decodes the body before auth; here an unauthenticated client
cannot make the server read, buffer or parse anything.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from zstream_mp._wire import (
    AUTHORIZATION,
    CURSOR_MAX,
    EVENTS_PATH,
    IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
    LAST_EVENT_ID,
    RUN_BODY_MAX,
    RUN_END_PATH,
    RUNS_PATH,
    STREAM_PATH,
)
from zstream_mp.errors import BrokerFullError, ShuttingDownError, StreamCapacityError
from zstream_mp.server.auth import bearer_token
from zstream_mp.server.batch_checks import (
    bad_idempotency_key,
    encoded_events,
    may_hold_lone_surrogates,
)
from zstream_mp.server.body import json_body, parsed_body, read_body
from zstream_mp.server.brokers.base import shown_cursor
from zstream_mp.server.framing import END, PING, EventFilter, frame_for
from zstream_mp.server.idempotency import (
    Busy,
    Claimed,
    Fence,
    Mismatch,
    Replay,
    caller_scope,
    fingerprint,
)
from zstream_mp.server.models import (
    END_FRAME_BYTES,
    StreamBatchRequest,
    parse_uuid,
)
from zstream_mp.server.runs import not_found_message
from zstream_mp.server.sse import SSEResponse, single_frame
from zstream_mp.server.state import ServerState
from zstream_mp.server.zenml_errors import (
    DISABLED,
    auth_refusal,
    detail_response,
    endpoint_context,
    exception_response,
    prefixed,
    unavailable,
    validation_error,
)

logger = logging.getLogger("zstream_mp.server")

_READY_TIMEOUT_S = 2.0
RESTART_GAP = "restart"
"""The gap reason of a subscriber whose cursor the broker's ids cannot continue from."""
_CLAIM_ATTEMPTS = 3
"""Claims of one request: a lost lease (the publish outlived it) re-claims to find the answer."""
_batch_adapter: TypeAdapter[StreamBatchRequest] = TypeAdapter(StreamBatchRequest)


def _zenml_route(method: str, path: str) -> str:
    """The route as ZenML's traceback names it (its path parameter is `pipeline_run_id`)."""
    return f"{method} {path.replace('{run_id}', '{pipeline_run_id}')}"


def _replayed(response: Response, replayed: bool) -> Response:
    """Say on a stored batch's answer that the key was honoured (`IDEMPOTENT_REPLAYED`)."""
    if response.status_code == 200:
        response.headers[IDEMPOTENT_REPLAYED] = "true" if replayed else "false"
    return response


def _path_run_id(request: Request) -> tuple[UUID | None, list[dict[str, Any]]]:
    try:
        return parse_uuid(request.path_params["run_id"]), []
    except ValidationError as exc:
        return None, prefixed(exc, "path", "pipeline_run_id")


class Handlers:
    """Request handlers bound to one `ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._publish_ctx = endpoint_context(
            Handlers.publish_run_events, _zenml_route("POST", EVENTS_PATH)
        )
        self._stream_ctx = endpoint_context(
            Handlers.stream_run_events, _zenml_route("GET", STREAM_PATH)
        )
        self._create_ctx = endpoint_context(Handlers.create_run, f"POST {RUNS_PATH}")
        self._end_ctx = endpoint_context(Handlers.end_run, f"POST {RUN_END_PATH}")

    # -- shared checks -----------------------------------------------------------------
    def gate(self, request: Request, right: str) -> Response | None:
        """Auth (401/403), then streaming enabled (501)."""
        failure = self.state.auth.check(request.headers.get(AUTHORIZATION, ""), right)
        if failure is not None:
            return auth_refusal(failure, right)
        if self.state.config.disabled:
            return detail_response(501, DISABLED)
        return None

    def _unknown_run(self, run_id: UUID) -> Response | None:
        if self.state.runs.known(run_id):
            return None
        return exception_response(404, "KeyError", not_found_message(run_id))

    def _run_of(self, request: Request, right: str, context: str) -> UUID | Response:
        """The path's run, or the refusal: auth (401/403/501), validation (422), lookup (404)."""
        gate = self.gate(request, right)
        if gate is not None:
            return gate
        run_id, errors = _path_run_id(request)
        if errors or run_id is None:
            return validation_error(errors, context)
        return self._unknown_run(run_id) or run_id

    # -- POST /api/v1/runs/{run_id}/events -----------------------------------------------
    async def publish_run_events(self, request: Request) -> Response:
        """Auth and the key's shape, then the body (422), the run (404), each event
        (400/413/422), then the append: once per `Idempotency-Key` when one is given."""
        gate = self.gate(request, "write")
        if gate is not None:
            return gate
        key = request.headers.get(IDEMPOTENCY_KEY) or None
        bad_key = bad_idempotency_key(key) if key is not None else None
        if bad_key is not None:
            return exception_response(400, "ValueError", bad_key)
        read = await self._read_batch(request)
        if isinstance(read, Response):
            return read
        run_id, batch, raw = read
        missing = self._unknown_run(run_id)
        if missing is not None:
            return missing
        if not batch.events:
            return JSONResponse({"count": 0, "last_id": None})
        payloads = encoded_events(batch, run_id, surrogates=may_hold_lone_surrogates(raw))
        if isinstance(payloads, Response):
            return payloads
        if key is None:
            return await self._publish(run_id, payloads)
        scope = caller_scope(bearer_token(request.headers.get(AUTHORIZATION, "")), str(run_id))
        return await self._publish_once(run_id, payloads, scope, key)

    async def _read_batch(
        self, request: Request
    ) -> tuple[UUID, StreamBatchRequest, bytes] | Response:
        """The path's run id, the validated body and its bytes, or ZenML's 422 naming every
        error."""
        config = self.state.config
        raw = await read_body(request, config.max_request_body, config.body_timeout)
        body = parsed_body(request, raw, self._publish_ctx, config.max_body_containers)
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
                errors.extend(prefixed(exc, "body"))
        if errors or run_id is None or batch is None:
            return validation_error(errors, self._publish_ctx)
        return run_id, batch, raw

    async def _publish_once(
        self, run_id: UUID, payloads: list[bytes], scope: str, key: str
    ) -> Response:
        """Append under an `Idempotency-Key`: a repeat gets the stored answer, a key reused
        with another body 422, a key still in flight elsewhere 409."""
        store = self.state.idempotency
        fp = fingerprint(payloads)
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                outcome = await store.claim(scope, key, fp)
            except Exception as exc:
                logger.warning("idempotency claim failed for run %s: %s", run_id, exc)
                return unavailable("Broker publish failed.")
            if isinstance(outcome, Replay):
                return _replayed(JSONResponse(outcome.result), True)
            if isinstance(outcome, Mismatch):
                return exception_response(
                    422,
                    "ValueError",
                    f"{IDEMPOTENCY_KEY} was already used with a different request body.",
                )
            if isinstance(outcome, Busy):
                break
            assert isinstance(outcome, Claimed)
            if outcome.fence is None:
                response = await self._publish(run_id, payloads)
                result = json.loads(bytes(response.body)) if response.status_code == 200 else None
                await store.finish(scope, key, fp, result)
                return _replayed(response, False)
            fenced = await self._publish_fenced(run_id, payloads, outcome.fence)
            if fenced is not None:
                if fenced.status_code != 200:
                    await store.release(outcome.fence)
                return _replayed(fenced, False)
            # the claim's lease ran out mid-publish and another attempt took the key over:
            # nothing was appended; claim again to answer with that attempt's result
        return exception_response(
            409,
            "EntityExistsError",
            f"A request with this {IDEMPOTENCY_KEY} is still being processed; retry shortly.",
        )

    async def _publish_fenced(
        self, run_id: UUID, payloads: list[bytes], fence: Fence
    ) -> JSONResponse | None:
        """Append and record in one step (Redis); None when the claim was lost meanwhile."""
        try:
            last = await self.state.broker.publish_fenced(
                self.state.key(run_id),
                payloads,
                fence.record_key,
                fence.claim,
                fence.fp,
                fence.ttl_ms,
            )
        except Exception as exc:
            logger.warning("broker publish failed for run %s: %s", run_id, exc)
            return unavailable("Broker publish failed.")
        if last is None:
            return None
        return JSONResponse({"count": len(payloads), "last_id": last})

    async def _publish(self, run_id: UUID, payloads: list[bytes]) -> JSONResponse:
        try:
            last = await self.state.broker.publish(self.state.key(run_id), payloads)
        except BrokerFullError as exc:
            logger.warning("memory broker full, refusing a batch for run %s: %s", run_id, exc)
            return unavailable("Broker publish failed: the memory broker is full.")
        except Exception as exc:
            logger.warning("broker publish failed for run %s: %s", run_id, exc)
            return unavailable("Broker publish failed.")
        self.state.runs.touch(run_id)
        await self.state.broadcaster.let_subscribers_write(self.state.key(run_id))
        return JSONResponse({"count": len(payloads), "last_id": last})

    # -- GET /api/v1/runs/{run_id}/events/stream ---------------------------------------
    async def stream_run_events(self, request: Request) -> Response:
        run_id = self._run_of(request, "read", self._stream_ctx)
        if isinstance(run_id, Response):
            return run_id
        query = request.query_params
        event_filter = EventFilter.of(
            query.getlist("kinds"), query.getlist("step_names"), query.getlist("correlation_ids")
        )
        from_id = request.headers.get(LAST_EVENT_ID) or query.get("since")
        broker = self.state.broker
        if from_id is not None:
            try:
                if len(from_id) > CURSOR_MAX:
                    raise ValueError(f"cursor {shown_cursor(from_id)} is too long")
                broker.validate_cursor(from_id)
            except ValueError as exc:
                return exception_response(400, "ValueError", str(exc))
        key = self.state.key(run_id)
        lost: str | None = None
        if from_id is not None:
            try:
                restarted = await broker.cursor_restarted(key, from_id)
            except Exception:
                restarted = False  # broker down: the subscriber's own retries report it
            if restarted:  # the cursor is from before this server (re)started
                from_id, lost = None, RESTART_GAP
        if self.state.runs.ended(run_id):
            try:
                latest = await broker.latest_id(key)
            except Exception:
                pass
            else:
                if latest is None or (from_id is not None and from_id == latest):
                    return single_frame(END)
        broadcaster = self.state.broadcaster
        try:
            sub = await broadcaster.subscribe(key, from_id, lost)
        except ShuttingDownError:
            return unavailable("Server is shutting down.")
        except StreamCapacityError as exc:
            holder = "This pipeline run" if exc.scope == "per-run" else "This server"
            return unavailable(
                f"{holder} has reached the {exc.scope} subscriber cap "
                f"({exc.cap}); retry shortly or close an existing subscriber."
            )
        except Exception as exc:
            logger.warning("subscribe failed for run %s: %s", run_id, exc)
            return unavailable("Stream broker is currently unavailable.")
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

        return SSEResponse(
            frames(),
            write_timeout=self.state.config.sse_write_timeout,
            on_stalled=self.state.connections.abort,
        )

    # -- GET /ready (not in ZenML) ------------------------------------------------------
    async def ready(self, request: Request) -> Response:
        """200 when the broker answers within `_READY_TIMEOUT_S`, else 503 with Retry-After."""
        if self.state.broadcaster.closing:
            return unavailable("Server is shutting down.")
        try:
            await asyncio.wait_for(self.state.broker.ping(), _READY_TIMEOUT_S)
        except Exception as exc:
            logger.info("readiness probe: broker unavailable: %s", exc)
            return unavailable("Stream broker is currently unavailable.")
        return PlainTextResponse("ready")

    # -- run lifecycle (not in ZenML) ---------------------------------------------------
    async def create_run(self, request: Request) -> Response:
        gate = self.gate(request, "write")
        if gate is not None:
            return gate
        body = await json_body(
            request, RUN_BODY_MAX, self._create_ctx, timeout=self.state.config.body_timeout
        )
        run_id: UUID = uuid4()
        if body is not None:
            if not isinstance(body, dict):
                error = {
                    "type": "dict_type",
                    "loc": ("body",),
                    "msg": "Input should be a valid dictionary",
                    "input": body,
                }
                return validation_error([error], self._create_ctx)
            if body.get("id") is not None:
                try:
                    run_id = (
                        parse_uuid(body["id"])
                        if isinstance(body["id"], str)
                        else TypeAdapter(UUID).validate_python(body["id"])
                    )
                except ValidationError as exc:
                    return validation_error(prefixed(exc, "body", "id"), self._create_ctx)
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
            return unavailable("Broker publish failed.")
        runs.mark_ended(run_id)
        return JSONResponse({"id": str(run_id), "ended": True})
