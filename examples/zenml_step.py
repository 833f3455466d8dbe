"""A ZenML step whose pool workers stream tokens: change one import, keep everything else.

    pip install 'zenml[server]==0.98.0' && zenml login     # a server with streaming on
    python examples/zenml_step.py

Inside the step the run, the step and the credentials come from ZenML, and the spawn
pool's workers (fresh interpreters) get them from zstream-mp's handoff. ZenML's server is
the destination here (`ZSTREAM_SERVER` overrides it); follow the run with
`zstream-mp tail RUN_ID --server ZENML_URL --token ...`.
"""

from __future__ import annotations

import multiprocessing
import sys

from zstream_mp import flush, publish  # instead of: from zenml.streaming import ...


def generate(prompt: str) -> int:
    words = f"an answer to {prompt}".split()
    for i, word in enumerate(words):
        publish({"prompt": prompt, "token": word}, kind="token", correlation_id=prompt, index=i)
    return len(words)


def main() -> None:
    try:
        from zenml import get_step_context, pipeline, step
    except ImportError:
        print("this example needs ZenML 0.98: pip install 'zenml[server]==0.98.0' && zenml login")
        sys.exit(0)

    @step
    def answer_all() -> int:
        print(f"run {get_step_context().pipeline_run.id}", flush=True)
        publish({"state": "fanning out"}, kind="status")
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            tokens = sum(pool.map(generate, ["p1", "p2", "p3", "p4"]))
        publish({"state": "done", "tokens": tokens}, kind="status")
        flush()
        return tokens

    @pipeline(enable_cache=False)
    def streaming_answers() -> None:
        answer_all()

    streaming_answers()  # ZenML ends the run's stream when the run finishes


if __name__ == "__main__":
    main()
