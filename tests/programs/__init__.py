"""Programs the suites run as child processes, one folder per topic (see `helpers.programs`).

* `fork/`        the fork matrix driver, the storm, the durable driver, and the worker bodies
                 their children (and pools started by tests) run
* `faults/`      a publisher under injected faults, and the fault model's parent programs
* `frameworks/`  the Ray and Dask drivers
* `servers/`     the fault server and the slow proxy (standard library only)
* `zenml/`       pipelines run in the ZenML peer's venv (copied into a fresh ZenML repo)
"""
