"""What the test suites share: `from helpers.x import y` (`pythonpath` in `pyproject.toml`).

Modules the test process imports live here; programs a test runs as a child process (and
the worker bodies their children run) live in `tests/programs/`, started through `programs`.

* `servers`      our server in a subprocess (`start_server`), `free_port`, `NotRunnable`
* `redis`        a private redis-server (`start_redis`)
* `sse`          raw SSE bodies and frames
* `programs`     the child programs' paths (`program()`) and their environment (`env()`)
* `faultserver`  `FaultProcess`: the scriptable fault server, started and read from a test
* `targets`      where the fork tests publish to, bounded driver runs, exactly-once counting
* `frameworks`   the Ray and Dask drivers, counting events by identity
* `probes`       peak RSS, raw HTTP, a server under `ulimit -n`
* `switchproxy`  a proxy that loses one answer and fails over
* `zenml_peer`   the real ZenML 0.98.0 server (`ensure_peer()`, `held_run()`)
* `zenml_steps`  real ZenML pipelines that publish through zstream_mp
* `contract_*`   the contract suite's targets, scenarios, SSE capture and envelope
* `mock_server`  a storing server behind `httpx.MockTransport` (unit tests)
* `dead_publisher` a forked publisher that spilled and died (unit tests of the recovery wing)
"""
