"""A ZenML step whose workers stream tokens: change one import, keep everything else.

    python examples/zenml_step.py     # with a ZenML 0.98 client logged in to a server

Inside the step the run, step and credentials come from ZenML. The spawn pool's workers are
fresh interpreters without ZenML's step context: they get it from zstream-mp's handoff.
"""

from __future__ import annotations

import multiprocessing

from zenml import pipeline, step

from zstream_mp import flush, publish  # instead of: from zenml.streaming import ...


def generate(prompt: str) -> int:
    for i, word in enumerate(f"an answer to {prompt}".split()):
        publish({"prompt": prompt, "token": word}, kind="token", correlation_id=prompt, index=i)
    return i + 1


@step
def answer_all() -> int:
    publish({"state": "fanning out"}, kind="status")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        tokens = sum(pool.map(generate, ["p1", "p2", "p3", "p4"]))
    publish({"state": "done", "tokens": tokens}, kind="status")
    flush()
    return tokens


@pipeline(enable_cache=False)
def streaming_answers() -> None:
    answer_all()


if __name__ == "__main__":
    streaming_answers()
