"""An LLM-style token stream: pool workers stream tokens, a consumer joins them live.

    python examples/llm_tokens.py

Each answer is a `correlation_id`; each token carries its `index`. Events from several
processes interleave on the wire, so the consumer orders each answer's tokens by index.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import defaultdict

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run

PROMPTS = ("why is the sky blue", "what is a fork", "name a prime")


def generate(prompt: str) -> int:
    """Stands in for a model call: one `token` event per word, then `answer_done`."""
    words = f"an answer to '{prompt}' streamed one token at a time".split()
    for i, word in enumerate(words):
        zstream_mp.publish({"text": word}, kind="token", correlation_id=prompt, index=i)
        time.sleep(0.02)
    zstream_mp.publish({"tokens": len(words)}, kind="answer_done", correlation_id=prompt)
    return len(words)


def consume(url: str, token: str | None, run_id: str, answers: dict[str, dict[int, str]]) -> None:
    """Read the run until it ends; print each answer once it is complete."""
    for item in zstream_mp.subscribe(url, run_id, token=token, kinds=["token", "answer_done"]):
        if isinstance(item, zstream_mp.Gap):  # the server lost events for this reader
            print(f"  (gap: {item.reason})")
            continue
        prompt = item.correlation_id or ""
        if item.kind == "token" and item.index is not None:
            answers[prompt][item.index] = item.payload["text"]
        elif item.kind == "answer_done":
            text = " ".join(answers[prompt][i] for i in sorted(answers[prompt]))
            print(f"  {prompt!r} -> {text}", flush=True)


def main() -> None:
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        answers: dict[str, dict[int, str]] = defaultdict(dict)
        reader = threading.Thread(target=consume, args=(url, token, run_id, answers))
        reader.start()
        zstream_mp.bind(run_id, server=url, token=token)
        with multiprocessing.Pool(3) as pool:
            tokens = sum(pool.map(generate, PROMPTS))
        zstream_mp.flush_tree(30)
        end_run(url, run_id, token=token)  # the consumer's stream stops at `end`
        reader.join(30)
        print(f"published {tokens + len(PROMPTS)} events")


if __name__ == "__main__":
    main()
