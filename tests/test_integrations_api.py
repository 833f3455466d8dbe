"""The integrations' call-site contract, in this process, without starting a framework.

Bad input gets a typed error where it is passed; the hooks and the plugin pickle by
reference and never show the token; chained hooks run in order.
"""

from __future__ import annotations

import importlib.util
import pickle
import uuid

import pytest

import zstream_mp
from zstream_mp.integrations import dask as zdask
from zstream_mp.integrations import ray as zray

TOKEN = "secret-" + "9d2f41c7"
CTX = zstream_mp.StreamContext(run_id=str(uuid.uuid4()), server="http://127.0.0.1:9", token=TOKEN)
calls: list[str] = []


def first_hook() -> None:
    calls.append("first")


def second_hook() -> None:
    calls.append("second")


@pytest.fixture(autouse=True)
def _no_context() -> None:
    zstream_mp.unbind()
    calls.clear()


def test_no_context_is_a_typed_error_at_the_call_site() -> None:
    with pytest.raises(zstream_mp.InvalidContextError, match="bind"):
        zray.runtime_env()
    with pytest.raises(zstream_mp.InvalidContextError, match="bind"):
        zdask.plugin()
    with pytest.raises(zstream_mp.InvalidContextError, match="StreamContext"):
        zray.setup_hook("not a context")  # type: ignore[arg-type]


def test_runtime_env_keeps_the_base_and_chains_its_hook_after_ours() -> None:
    base = {"env_vars": {"A": "1"}, "worker_process_setup_hook": first_hook, "pip": ["x"]}
    env = zray.runtime_env(CTX, base=base)
    assert env["env_vars"] == {"A": "1"} and env["pip"] == ["x"]
    assert base["worker_process_setup_hook"] is first_hook  # the caller's dict is untouched
    hook = env["worker_process_setup_hook"]
    assert hook.__name__ == "zstream_mp_bind+first_hook"
    assert TOKEN not in repr(env) and TOKEN not in repr(hook)


def test_bound_context_is_the_default() -> None:
    with zstream_mp.bind(CTX):
        env = zray.runtime_env()
    hook = env["worker_process_setup_hook"]
    assert pickle.loads(pickle.dumps(hook)).ctx == CTX  # by reference: workers import us


def test_chain_hooks_runs_callables_and_names_in_order() -> None:
    chained = zray.chain_hooks(first_hook, None, f"{__name__}.second_hook")
    chained()
    assert calls == ["first", "second"]
    with pytest.raises(TypeError):
        zray.chain_hooks(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"module\.function"):
        zray.chain_hooks("nodots")


def test_flush_timeouts_are_checked() -> None:
    with pytest.raises(ValueError):
        zray.flush_workers(-1.0)
    with pytest.raises(ValueError):
        zdask.plugin(CTX, flush_timeout=float("nan"))


@pytest.mark.dask
def test_dask_plugin_pickles_and_hides_the_token() -> None:
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("distributed is not installed: the dask plugin checks were NOT run")
    found = zdask.plugin(CTX)
    assert isinstance(found, zdask.StreamPlugin) and found.name == "zstream-mp"
    assert TOKEN not in repr(found)
    back = pickle.loads(pickle.dumps(found))
    assert back.ctx == CTX and back.flush_timeout == zdask.DEFAULT_TEARDOWN_FLUSH
