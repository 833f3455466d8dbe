"""Listing runs and a run's status (not in ZenML): what `zstream-mp runs` and the page read.

The list is paged (`run_index.py`): `?order=oldest|newest&limit=N&cursor=C`, answered as
`{"runs": [...], "next": C or null}`; oldest first and 1,000 per page by default.

A run is known when this server created it, received events for it or ended it, when
someone is subscribed to it, or when its broker still holds a stream for it (a
Redis-backed server keeps streams across restarts). Any other id answers 404, so a typo
never looks like a quiet live run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zstream_mp._wire import RUN_PATH, RUNS_PATH, error_detail
from zstream_mp.server.models import parse_uuid
from zstream_mp.server.run_index import (
    PageRequest,
    list_page,
    listing_gate,
    summaries,
    summary,
)
from zstream_mp.server.runs import not_found_message

if TYPE_CHECKING:
    from zstream_mp.server.state import ServerState

Gate = Callable[[Request, str], "Response | None"]
Handler = Callable[[Request], Awaitable[Response]]


async def run_info(state: ServerState, run_id: UUID) -> dict[str, Any] | None:
    """The run's status as JSON, or None when the server knows nothing of it."""
    meta = (await summaries(state, [run_id])).get(run_id)  # broker down: the registry alone
    info = summary(state, run_id, meta, state.runs.first_seen(run_id))
    if info["last_event_id"] is None and not info["subscribers"] and not state.runs.seen(run_id):
        return None
    return info


class RunAPI:
    """The list and status handlers, behind the app's auth gate (401/403/501 as ZenML)."""

    def __init__(self, state: ServerState, gate: Gate) -> None:
        self.state = state
        self.gate = gate

    async def list_runs(self, request: Request) -> Response:
        denied = self.gate(request, "read")
        if denied is not None:
            return denied
        try:
            page = PageRequest.of(request.query_params)
        except ValueError as exc:
            return JSONResponse({"detail": error_detail("ValueError", str(exc))}, status_code=422)
        async with listing_gate(self.state):  # the JSON of a big page is built inside too
            return JSONResponse(await list_page(self.state, page))

    async def status(self, request: Request) -> Response:
        denied = self.gate(request, "read")
        if denied is not None:
            return denied
        try:
            run_id = parse_uuid(request.path_params["run_id"])
        except ValueError:
            return JSONResponse(
                {"detail": error_detail("ValueError", "run id must be a UUID")}, status_code=422
            )
        info = await run_info(self.state, run_id) if self.state.runs.known(run_id) else None
        if info is None:
            return JSONResponse(
                {"detail": error_detail("KeyError", not_found_message(run_id))}, status_code=404
            )
        return JSONResponse(info)

    def routes(self, guard: Callable[[Handler], Handler], create: Handler) -> list[Route]:
        """`GET|POST /api/v1/zstream/runs` (list | create) and `GET .../runs/{run_id}`."""

        async def runs(request: Request) -> Response:
            if request.method == "POST":
                return await create(request)
            return await self.list_runs(request)

        return [
            Route(RUNS_PATH, guard(runs), methods=["GET", "POST"]),
            Route(RUN_PATH, guard(self.status), methods=["GET"]),
        ]
