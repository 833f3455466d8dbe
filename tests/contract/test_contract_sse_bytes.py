"""Same inputs, same SSE bytes: ours against ZenML 0.98.0 (or golden bytes recorded from it).

The script in `helpers.contract_scenarios` runs once per target on a fresh run. Captures are
normalised (`id:` values by order of appearance, run and step run ids masked, pings
dropped) and must be byte-identical to ZenML's. When the ZenML peer is not available the
golden files in `golden/` (recorded from the real server) stand in for it; set
`ZSTREAM_UPDATE_GOLDEN=1` with the peer running to record them again.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from helpers import zenml_peer as zpeer
from helpers.contract_scenarios import SUBS, Recording, exercise, scenario_hash
from helpers.contract_sse import frame_fields, id_key, normalise
from helpers.contract_targets import TARGETS, Registry, note

# Every target's bytes are compared with ZenML's own capture when the peer runs (golden bytes
# otherwise), so the whole module goes where the peer's users go (`-m zenml` in .ci/run).
pytestmark = pytest.mark.zenml

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("ZSTREAM_UPDATE_GOLDEN") == "1"
SUB_NAMES = [s.name for s in SUBS]


class Recorded:
    """Normalised result of the script on one target."""

    def __init__(self, rec: Recording, run_id: str, step_run_id: str) -> None:
        self.raw = rec
        masks = {run_id: "<RUN>", step_run_id: "<STEP_RUN>"}
        self.bytes = {k: normalise(c.body, masks) for k, c in rec.captures.items()}
        self.ended = {k: c.ended for k, c in rec.captures.items()}
        self.statuses = {k: list(v) for k, v in rec.statuses.items()}


_cache: dict[str, Recorded | str] = {}


def _record(registry: Registry, name: str) -> Recorded:
    if name in _cache:
        got = _cache[name]
        if isinstance(got, str):
            pytest.skip(got)
        return got
    with contextlib.ExitStack() as stack:
        if name == "zenml":
            base = registry.main("zenml")  # skips loudly when the peer cannot run
            peer = zpeer.ensure_peer("redis")
            held = stack.enter_context(zpeer.held_run(peer))
            run_id, step_run_id = held.run_id, held.step_run_id
            rec = exercise(base.url, base.token, run_id, step_run_id, stack.close)
        else:
            t = registry.main(name)
            assert t.new_run is not None and t.end_run is not None
            run_id = t.new_run()
            step_run_id = t.step_run_id
            rec = exercise(t.url, t.token, run_id, step_run_id, lambda: t.end_run(run_id))  # type: ignore[misc]
    result = Recorded(rec, run_id, step_run_id)
    _cache[name] = result
    if name == "zenml" and (UPDATE or not (GOLDEN / "manifest.json").exists()):
        _write_golden(result)
    return result


def _write_golden(rec: Recorded) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, data in rec.bytes.items():
        (GOLDEN / f"{name}.sse").write_bytes(data)
    manifest = {
        "source": "zenml 0.98.0 (real server, Redis Streams broker)",
        "scenario_hash": scenario_hash(),
        "statuses": rec.statuses,
        "ended": rec.ended,
    }
    (GOLDEN / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))


def _golden() -> tuple[dict[str, bytes], dict[str, list[int | None]], dict[str, str]]:
    path = GOLDEN / "manifest.json"
    if not path.exists():
        pytest.fail("no golden SSE bytes recorded: run once with the ZenML peer available")
    manifest = json.loads(path.read_text())
    if manifest["scenario_hash"] != scenario_hash():
        pytest.fail(
            "golden SSE bytes are stale (the script changed): re-record them with "
            "ZSTREAM_UPDATE_GOLDEN=1 and the ZenML peer running"
        )
    data = {n: (GOLDEN / f"{n}.sse").read_bytes() for n in SUB_NAMES}
    return data, manifest["statuses"], manifest["ended"]


def _reference(
    registry: Registry,
) -> tuple[str, dict[str, bytes], dict[str, list[int | None]], dict[str, str]]:
    """ZenML's own capture when the peer runs, else the golden files."""
    try:
        z = _record(registry, "zenml")
    except pytest.skip.Exception as exc:
        note(f"[sse-bytes] ZenML peer unavailable, comparing with golden bytes: {exc.msg}")
        return ("golden", *_golden())
    return "zenml", z.bytes, z.statuses, z.ended


@pytest.mark.parametrize("sub", SUB_NAMES)
def test_sse_bytes_equal_zenml(registry: Registry, target_name: str, sub: str) -> None:
    if target_name == "zenml":
        got = _record(registry, "zenml")
        gold, _, _ = _golden()
        assert got.bytes[sub] == gold[sub], "ZenML's bytes differ from the golden recording"
        return
    ref_name, ref, _, ref_ended = _reference(registry)
    ours = _record(registry, target_name)
    assert ours.bytes[sub].decode(errors="replace") == ref[sub].decode(errors="replace"), (
        f"{target_name} vs {ref_name}"
    )
    assert ours.bytes[sub] == ref[sub]
    assert ours.ended[sub] == ref_ended[sub], "how the read ended (frames/eof/timeout)"


def test_batch_statuses_equal_zenml(registry: Registry, target_name: str) -> None:
    if target_name == "zenml":
        got = _record(registry, "zenml")
        assert got.statuses == _golden()[1]
        return
    ref_name, _, statuses, _ = _reference(registry)
    assert _record(registry, target_name).statuses == statuses, ref_name


def test_ids_strictly_increase(registry: Registry, target_name: str) -> None:
    """Within every capture ids are distinct and increasing; live equals replay."""
    rec = _record(registry, target_name).raw
    for name, cap in rec.captures.items():
        ids = [frame_fields(f)["id"] for f in cap.frames() if b"\nid: " in b"\n" + f]
        keys = [id_key(i) for i in ids]
        assert keys == sorted(set(keys)), name
    live = rec.captures["live_all"].frames()
    assert live == rec.captures["replay_since"].frames()


def test_after_end_stream_closes(registry: Registry, target_name: str) -> None:
    rec = _record(registry, target_name).raw
    for sub in SUBS:
        if sub.phase == "after_end":
            cap = rec.captures[sub.name]
            assert cap.ended == "eof", f"{sub.name}: server kept the stream open after end"
            assert cap.frames()[-1] == b"event: end\ndata: {}", sub.name


assert set(TARGETS) == {"zenml", "ours-memory", "ours-redis"}
