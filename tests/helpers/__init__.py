"""What the test suites share; ``tests/`` is on ``sys.path``, so ``from helpers.x import y``.

* ``servers``     our server in a subprocess (``start_server``), ``free_port``, ``NotRunnable``
* ``redis``       a private redis-server (``start_redis``)
* ``sse``         raw SSE bodies and frames
* ``faultserver`` a scriptable HTTP server that answers with faults (run as a subprocess);
                  it stores every POST and replays it as ZenML's SSE, or fronts another server
* ``zenml_peer``  the real ZenML 0.98.0 server (``ensure_peer()``, ``held_run()``)
* ``zenml_steps`` real ZenML pipelines that publish through zstream_mp
* ``mock_server`` a storing server behind ``httpx.MockTransport`` (unit tests)
* ``dead_publisher`` a forked publisher that spilled and died (unit tests of the recovery wing)
"""
