"""The live page's routes: a run's events in a browser, served by `zstream-mp serve` itself.

`/` lists runs, `/runs/{run_id}` shows one run live. The page reads through three routes
under `/ui/api/`, each a thin wrapper around the API handler it names, so auth, filters,
resume and 404s behave exactly as on the API:

- `/ui/api/runs`, `/ui/api/runs/{run_id}`: the run list and status;
- `/ui/api/runs/{run_id}/stream`: the run's SSE stream for the browser's `EventSource`, with
  each event's receive time (`ui_stream`). A `retry: 1000` line makes the browser reconnect
  within a second, resuming with `Last-Event-ID`.

The files are `ui_assets`'s, the token cookie is `ui_session`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from zstream_mp.server.favicon import FAVICON_SVG
from zstream_mp.server.models import parse_uuid
from zstream_mp.server.ui_assets import PAGE_HEADERS, asset_response, load_assets
from zstream_mp.server.ui_session import API_PREFIX, Handler, session, with_cookie
from zstream_mp.server.ui_stream import page_frames

if TYPE_CHECKING:
    from zstream_mp.server.run_api import RunAPI
    from zstream_mp.server.state import ServerState

__all__ = ["routes"]

_GET = ["GET", "HEAD"]


def routes(
    state: ServerState, stream: Handler, runs: RunAPI, guard: Callable[[Handler], Handler]
) -> list[Route]:
    """The page's routes; `stream` is the API's guarded SSE handler."""
    assets = load_assets()

    def page(name: str) -> Handler:
        async def endpoint(request: Request) -> Response:
            return asset_response(assets, name)

        return endpoint

    async def static(request: Request) -> Response:
        return asset_response(assets, request.path_params["name"])

    async def favicon(request: Request) -> Response:
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers=PAGE_HEADERS)

    def api(handler: Handler) -> Handler:
        return guard(with_cookie(handler))

    return [
        Route("/", page("index.html"), methods=_GET),
        Route("/runs/{run_id}", page("run.html"), methods=_GET),
        Route("/ui/static/{name}", static, methods=_GET),
        Route("/favicon.ico", favicon, methods=_GET),
        Route("/favicon.svg", favicon, methods=_GET),
        Route("/ui/session", guard(session(state)), methods=["GET", "POST", "DELETE"]),
        Route(API_PREFIX + "runs", api(runs.list_runs), methods=["GET"]),
        Route(API_PREFIX + "runs/{run_id}", api(runs.status), methods=["GET"]),
        Route(
            API_PREFIX + "runs/{run_id}/stream", api(_for_browser(state, stream)), methods=["GET"]
        ),
    ]


def _for_browser(state: ServerState, stream: Handler) -> Handler:
    """The API's stream with its frames rewritten for `EventSource` and timed (`ui_stream`)."""

    async def endpoint(request: Request) -> Response:
        response = await stream(request)
        if isinstance(response, StreamingResponse) and response.status_code == 200:
            key = state.key(parse_uuid(request.path_params["run_id"]))
            response.body_iterator = page_frames(
                response.body_iterator, lambda entry_id: state.broker.received_at(key, entry_id)
            )
        return response

    return endpoint
