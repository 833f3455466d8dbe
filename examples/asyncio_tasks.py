"""asyncio: a run per task with `with bind(...)`, and `await aflush()`.

    python examples/asyncio_tasks.py

`publish()` never blocks, so it is safe inside `async def`. `with bind(...)` binds
the run to the task that enters it (`contextvars`): five tasks answer five questions
at once, each into its own run. `await zstream_mp.aflush()` waits for delivery without
blocking the event loop.
"""

from __future__ import annotations

import asyncio

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


async def answer(question: int, run_id: str, url: str, token: str | None) -> None:
    with zstream_mp.bind(run_id, server=url, token=token):
        for i, word in enumerate(("thinking", "about", f"question-{question}")):
            zstream_mp.publish({"text": word}, kind="token", correlation_id=f"q{question}", index=i)
            await asyncio.sleep(0.01)  # stands in for awaiting a model or an API


async def run_all(runs: list[str], url: str, token: str | None) -> None:
    await asyncio.gather(*(answer(q, run, url, token) for q, run in enumerate(runs)))
    assert await zstream_mp.aflush(10.0), "some events were not delivered"


def main() -> None:
    with server() as (url, token):
        runs = [create_run(url, token=token) for _ in range(5)]
        for run_id in runs:
            show(url, run_id)
        asyncio.run(run_all(runs, url, token))
        for run_id in runs:
            end_run(url, run_id, token=token)
        print("published 3 events into each of 5 runs, one run per task")


if __name__ == "__main__":
    main()
