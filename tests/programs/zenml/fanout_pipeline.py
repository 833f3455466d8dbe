"""Entry point: `python fanout_pipeline.py MODE OUT_DIR [CASES]` (see `fanout_steps`).

Kept to a few lines on purpose: spawn and forkserver children re-import the main module,
and this one imports ZenML only when run as the script.
"""

if __name__ == "__main__":
    import sys

    import fanout_steps

    fanout_steps.PIPELINES[fanout_steps.MODE]()
    print(f"zsz pipeline {fanout_steps.MODE} done", flush=True)
    sys.stdout.flush()
