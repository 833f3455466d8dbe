"""asyncio: ``publish()`` never blocks, so it is safe to call inside ``async def``.

    python examples/asyncio_tasks.py

One run for the whole process here (``bind()`` without ``with`` is process-wide). Waiting
for delivery blocks, so it runs in a thread: ``await asyncio.to_thread(flush, timeout)``.
"""

from __future__ import annotations

import asyncio

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


async def answer(question: int) -> None:
    for i, word in enumerate(("thinking", "about", f"question-{question}")):
        zstream_mp.publish({"text": word}, kind="token", correlation_id=f"q{question}", index=i)
        await asyncio.sleep(0.01)  # stands in for awaiting a model or an API


async def run_all() -> None:
    await asyncio.gather(*(answer(q) for q in range(5)))
    await asyncio.to_thread(zstream_mp.flush, 10.0)


def main() -> None:
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        asyncio.run(run_all())
        end_run(url, run_id, token=token)
        print("published 15 events")


if __name__ == "__main__":
    main()
