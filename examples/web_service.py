"""One web process serving several runs at once: each request streams into its own run.

    python examples/web_service.py

A Starlette app (FastAPI is built on it and works the same) whose handler binds the
request's run with `with bind(...)`: the binding belongs to the request's task, so
concurrent requests never mix their events. The example calls its own app through
httpx's ASGI transport (no port needed), three requests at once, then reads each run
back with `asubscribe()` to show every run holds its own request's tokens only.
"""

from __future__ import annotations

import asyncio
import sys

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run

try:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
except ImportError:
    print("this example needs starlette: pip install 'zstream-mp[server]'")
    sys.exit(0)


def make_app(url: str, token: str | None) -> Starlette:
    async def answer(request: Request) -> JSONResponse:
        question = request.query_params["q"]
        run_id = create_run(url, token=token)
        with zstream_mp.bind(run_id, server=url, token=token):  # this request's run only
            for i, word in enumerate(f"an answer to {question}".split()):
                zstream_mp.publish({"text": word, "q": question}, kind="token", index=i)
                await asyncio.sleep(0.01)  # awaiting the model, in a real service
        return JSONResponse({"run_id": run_id})

    return Starlette(routes=[Route("/answer", answer)])


async def serve_three(url: str, token: str | None) -> dict[str, str]:
    app = make_app(url, token)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        questions = ("why", "what", "how")
        answers = await asyncio.gather(*(client.get("/answer", params={"q": q}) for q in questions))
    assert await zstream_mp.aflush(10.0)
    return {q: r.json()["run_id"] for q, r in zip(questions, answers, strict=True)}


async def read_back(url: str, token: str | None, run_id: str) -> list[str]:
    return [
        str(event.payload["q"])
        async for event in zstream_mp.asubscribe(url, run_id, token=token)
        if isinstance(event, zstream_mp.Event)
    ]


def main() -> None:
    with server() as (url, token):
        runs = asyncio.run(serve_three(url, token))
        for run_id in runs.values():
            show(url, run_id)
            end_run(url, run_id, token=token)
        for question, run_id in runs.items():
            seen = asyncio.run(read_back(url, token, run_id))
            assert seen and set(seen) == {question}, (question, seen)
        print("3 requests served at once, each into its own run")


if __name__ == "__main__":
    main()
