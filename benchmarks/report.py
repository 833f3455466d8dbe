"""Run the benchmarks and write one Markdown page with plots: benchmarks/REPORT.md.

    .venv/bin/python benchmarks/report.py            # full run (several minutes)
    .venv/bin/python benchmarks/report.py --quick    # smaller counts, one repeat
    .venv/bin/python benchmarks/report.py --no-zenml # skip the ZenML peer columns

It runs `publish.py`, `forks.py` and `server_ingest.py` as they are and keeps their
tables, then measures four series for the plots (PNG, matplotlib from the `bench`
extra), each in fresh interpreters on loopback:

1. the caller's cost of `publish()` against payload size, beside the floor (`json.dumps`
   + `deque.append`) and `zenml.streaming.publish` (peer venv, its sending stubbed);
2. events/s delivered from a `multiprocessing.Pool` to our server, by workers and batch
   size, counted on the server (exit hooks deliver the tail);
3. latency from `publish()` in one process to the event arriving over SSE in another;
4. server ingest, ours (memory, Redis) beside ZenML 0.98.0 (Redis) where the peer runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import new_run, run_child, server  # noqa: E402

OUT_PAGE = HERE / "REPORT.md"
PLOTS = "report"
ZENML_PEER_PYTHON = Path(os.environ.get("ZENML_PEER_VENV", "/tmp/zenml-peer")) / "bin/python"
SIZES = (16, 128, 1024, 8192, 32768, 65000)
BURST = 2000
FANOUT_BURST = 4000


# --------------------------------------------------------------------------- children


def _payload(size: int) -> dict[str, Any]:
    """A payload whose compact JSON is `size` bytes (at least the empty one's)."""
    base = len(json.dumps({"seq": 0, "text": ""}, separators=(",", ":")))
    return {"seq": 0, "text": "x" * max(0, size - base - 4)}


def _child_size_cost(sizes: list[int], bursts: int) -> dict[str, Any]:
    """ns/call of publish() (sender parked on a silent socket) and of the floor, by size."""
    import collections
    import socket

    import zstream_mp

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    zstream_mp.bind(unique(), server=f"http://127.0.0.1:{sink.getsockname()[1]}")
    dumps = json.dumps
    out: dict[str, Any] = {"ours": {}, "floor": {}}
    zstream_mp.publish({"warm": 1})
    time.sleep(0.2)  # the sender now waits for an answer that never comes
    for size in sizes:
        payload = _payload(size)

        def floor(payload: dict[str, Any] = payload) -> float:
            d: collections.deque[str] = collections.deque(maxlen=4096)
            t0 = time.perf_counter_ns()
            for i in range(BURST):
                payload["seq"] = i
                d.append(dumps(payload, separators=(",", ":")))
            return (time.perf_counter_ns() - t0) / BURST

        def ours(payload: dict[str, Any] = payload) -> float:
            publish = zstream_mp.publish
            t0 = time.perf_counter_ns()
            for i in range(BURST):
                payload["seq"] = i
                publish(payload, kind="token", correlation_id="w0", index=i)
            return (time.perf_counter_ns() - t0) / BURST

        floors, calls = [], []
        for _ in range(bursts):
            floors.append(floor())
            calls.append(ours())
        out["floor"][str(size)] = statistics.median(floors)
        out["ours"][str(size)] = statistics.median(calls)
    return out


def _child_zenml_size_cost(sizes: list[int], bursts: int) -> dict[str, Any]:
    """zenml.streaming.publish per call by size; context lookup and sending stubbed out."""
    import uuid

    from zenml.streaming import publishing

    ctx = publishing._PublishContext(uuid.uuid4(), uuid.uuid4(), "bench")  # type: ignore[attr-defined]
    publishing._resolve_publish_context = lambda: ctx  # type: ignore[attr-defined]
    publishing._StreamPublisher._send_batch = lambda self, batch: None  # type: ignore[attr-defined]
    publish = publishing.publish
    out: dict[str, Any] = {"zenml": {}}
    for size in sizes:
        payload = _payload(size)

        def burst(payload: dict[str, Any] = payload) -> float:
            t0 = time.perf_counter_ns()
            for i in range(BURST):
                payload["seq"] = i
                publish(payload, kind="token", correlation_id="w0", index=i)
            elapsed = (time.perf_counter_ns() - t0) / BURST
            time.sleep(0.05)  # the stubbed sender drains the queue (its flush() would wait)
            return elapsed

        burst()
        out["zenml"][str(size)] = statistics.median(burst() for _ in range(bursts))
    return out


def _fanout_work(args: tuple[int, int]) -> int:
    import zstream_mp

    worker, count = args
    for seq in range(count):
        if seq and seq % FANOUT_BURST == 0:
            zstream_mp.flush(60)  # bursts never overflow the 4,096-event queue
        zstream_mp.publish(
            {"worker": worker, "seq": seq, "text": "the quick brown fox"},
            kind="token",
            correlation_id=f"w{worker}",
            index=seq,
        )
    return count  # no flush at the end: the exit hooks deliver the last burst


def _child_fanout(url: str, workers: int, events: int) -> dict[str, Any]:
    """Pool(workers) publishes `events` in all; events/s until the server holds them all."""
    import multiprocessing

    import zstream_mp
    from zstream_mp.runs import run_status

    run_id = new_run(url)
    zstream_mp.bind(run_id, server=url)
    per = events // workers
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    with ctx.Pool(workers) as pool:
        total = sum(pool.map(_fanout_work, [(w, per) for w in range(workers)]))
        pool.close()
        pool.join()
    held = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = run_status(url, run_id).last_event_id
        held = int(last) if last else 0  # memory broker ids count from 1
        if held >= total:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    return {"rate": total / elapsed, "published": total, "held": held}


def _child_publish_paced(run_id: str, url: str, count: int, rate: float) -> dict[str, Any]:
    import zstream_mp

    zstream_mp.bind(run_id, server=url)
    gap = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        target = start + i * gap
        while time.perf_counter() < target:
            time.sleep(max(0.0, min(0.002, target - time.perf_counter())))
        zstream_mp.publish({"seq": i, "t": time.time()}, kind="latency")
    zstream_mp.flush(30)
    return {"published": count}


def unique() -> str:
    import uuid

    return str(uuid.uuid4())


# --------------------------------------------------------------------------- measuring


def measure_latency(url: str, count: int, rate: float) -> list[float]:
    """Milliseconds from publish() (child process) to arrival over SSE (this process)."""
    import zstream_mp
    from zstream_mp.runs import create_run, end_run

    run_id = create_run(url)
    latencies: list[float] = []
    ready = threading.Event()

    def receive() -> None:
        stream = zstream_mp.subscribe(url, run_id, kinds=["latency"], timeout=60)
        ready.set()
        for item in stream:
            if isinstance(item, zstream_mp.Event):
                latencies.append((time.time() - float(item.payload["t"])) * 1000)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.5)  # the subscription is open before the first publish
    run_child(__file__, "paced", run_id, url, str(count), str(rate))
    deadline = time.monotonic() + 30
    while len(latencies) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    end_run(url, run_id)
    thread.join(10)
    return latencies


def measure_ingest(repeats: int, zenml: bool) -> tuple[dict[str, dict[int, float]], str]:
    """events/s by batch size: ours (memory, Redis) and the ZenML peer (Redis)."""
    import contextlib

    sys.path.insert(0, str(REPO / "tests"))
    import server_ingest as si

    note = ""
    with contextlib.ExitStack() as stack:
        cells: dict[str, Any] = {}
        for name, broker in (("ours, memory", "memory"), ("ours, Redis", "redis")):
            url, token, run_id = stack.enter_context(si.ours(broker))
            cells[name] = si.Cell(url, token, run_id, unique())
        if zenml:
            from helpers import zenml_peer as zpeer

            try:
                peer = zpeer.ensure_peer("redis")
                held = stack.enter_context(zpeer.held_run(peer))
                cells["ZenML 0.98.0, Redis"] = si.Cell(
                    peer.url, peer.token, held.run_id, held.step_run_id
                )
            except zpeer.PeerUnavailable as exc:
                note = f"ZenML peer not measured: {exc}"
        samples: dict[str, dict[int, list[float]]] = {
            n: {b: [] for b in si.BATCH_SIZES} for n in cells
        }
        for _ in range(repeats):
            for batch in si.BATCH_SIZES:
                for name, cell in cells.items():
                    samples[name][batch].append(cell.once(batch))
        for cell in cells.values():
            cell.client.close()
    return {n: {b: statistics.median(v) for b, v in s.items()} for n, s in samples.items()}, note


def run_script(name: str, *args: str) -> str:
    """One of the benchmark scripts as a user runs it; its printed tables."""
    done = subprocess.run(
        [sys.executable, str(HERE / name), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=str(REPO),
    )
    if done.returncode != 0:
        return f"{name} failed (exit {done.returncode}):\n{done.stderr[-1500:]}"
    return done.stdout.strip()


def zenml_python() -> str | None:
    if not ZENML_PEER_PYTHON.exists():
        return None
    ok = subprocess.run(
        [str(ZENML_PEER_PYTHON), "-c", "import zenml.streaming, httpx"],
        capture_output=True,
        timeout=120,
    )
    return str(ZENML_PEER_PYTHON) if ok.returncode == 0 else None


# --------------------------------------------------------------------------- plots


def plot_sizes(cost: dict[str, Any], zenml: dict[str, Any] | None, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    sizes = [int(s) for s in cost["ours"]]
    ax.plot(sizes, [cost["ours"][str(s)] / 1000 for s in sizes], "o-", label="zstream_mp.publish()")
    ax.plot(
        sizes, [cost["floor"][str(s)] / 1000 for s in sizes], "s--", label="floor: dumps + append"
    )
    if zenml:
        ax.plot(
            sizes,
            [zenml["zenml"][str(s)] / 1000 for s in sizes],
            "^-",
            label="zenml.streaming.publish (sending stubbed)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("payload, bytes of compact JSON")
    ax.set_ylabel("µs per call (caller's thread)")
    ax.set_title("Caller's cost of one publish() by payload size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fanout(rates: dict[int, dict[int, float]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for batch, by_workers in sorted(rates.items()):
        workers = sorted(by_workers)
        ax.plot(workers, [by_workers[w] for w in workers], "o-", label=f"batch {batch}")
    ax.set_xlabel("pool workers")
    ax.set_ylabel("events/s delivered (counted on the server)")
    ax.set_xticks(sorted({w for r in rates.values() for w in r}))
    ax.set_title("Pool fan-out to our server (memory broker)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(latencies: list[float], rate: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.hist(latencies, bins=60, color="#3a6df0", alpha=0.85)
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        value = percentile(latencies, q)
        ax.axvline(value, color="k", linestyle=style, label=f"p{q} {value:.1f} ms")
    ax.set_xlabel("ms from publish() to arrival over SSE (another process)")
    ax.set_ylabel("events")
    ax.set_title(f"Latency, {len(latencies):,} events at {rate:,.0f}/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ingest(results: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = list(results)
    batches = sorted({b for r in results.values() for b in r})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(batches))]
        ax.bar(xs, [results[name][b] for b in batches], width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(batches))])
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("events/s ingested (one keep-alive client)")
    ax.set_title("Server ingest: ours beside ZenML 0.98.0")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --------------------------------------------------------------------------- page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, one repeat")
    parser.add_argument("--no-zenml", action="store_true", help="do not use the ZenML peer")
    parser.add_argument("--no-scripts", action="store_true", help="skip the three scripts")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts: checks the page is produced (tests)"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_PAGE, help="the page; plots go beside it in report/"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "sizes":
            result = _child_size_cost([int(s) for s in rest[0].split(",")], int(rest[1]))
        elif mode == "zenml-sizes":
            result = _child_zenml_size_cost([int(s) for s in rest[0].split(",")], int(rest[1]))
        elif mode == "fanout":
            result = _child_fanout(rest[0], int(rest[1]), int(rest[2]))
        else:
            result = _child_publish_paced(rest[0], rest[1], int(rest[2]), float(rest[3]))
        print(json.dumps(result))
        return 0

    import matplotlib

    matplotlib.use("Agg")
    quick = args.quick or args.smoke
    bursts = 3 if quick else 9
    worker_counts = (1, 2, 4) if quick else (1, 2, 4, 8)
    batches = (16, 64, 1000) if quick else (16, 64, 256, 1000)
    fan_events = 8_000 if quick else 40_000
    lat_count, lat_rate = (1_000, 500.0) if quick else (5_000, 1_000.0)
    if args.smoke:
        bursts, worker_counts, batches, fan_events = 1, (1, 2), (64,), 1_000
        lat_count = 100
    page: Path = args.out
    out_dir = page.parent / PLOTS
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sizes_csv = ",".join(str(s) for s in SIZES)

    print("caller's cost by payload size ...", flush=True)
    cost = run_child(__file__, "sizes", sizes_csv, str(bursts))
    zenml_cost = None
    zpy = None if (args.no_zenml or args.smoke) else zenml_python()
    if zpy:
        zenml_cost = run_child(
            __file__,
            "zenml-sizes",
            sizes_csv,
            str(bursts),
            python=zpy,
            env={"ZENML_ANALYTICS_OPT_IN": "false"},
        )
    plot_sizes(cost, zenml_cost, out_dir / "publish_cost_by_size.png")

    print("pool fan-out by workers and batch size ...", flush=True)
    fanout: dict[int, dict[int, float]] = {b: {} for b in batches}
    fan_rows = []
    with server() as url:
        for batch in batches:
            for workers in worker_counts:
                r = run_child(
                    __file__,
                    "fanout",
                    url,
                    str(workers),
                    str(fan_events),
                    env={"ZENML_STREAM_PUBLISHER_BATCH_SIZE": str(batch)},
                )
                fanout[batch][workers] = r["rate"]
                fan_rows.append((batch, workers, r["rate"], int(r["published"]), int(r["held"])))
        print("latency ...", flush=True)
        latencies = measure_latency(url, lat_count, lat_rate)
    plot_fanout(fanout, out_dir / "fanout_by_workers_and_batch.png")
    plot_latency(latencies, lat_rate, out_dir / "latency.png")

    print("server ingest, ours and ZenML ...", flush=True)
    ingest, ingest_note = measure_ingest(1 if quick else 3, not (args.no_zenml or args.smoke))
    plot_ingest(ingest, out_dir / "ingest_ours_vs_zenml.png")

    scripts: list[tuple[str, str]] = []
    if not (args.no_scripts or args.smoke):
        small = quick
        for name, script_args in (
            ("publish.py", ["--events", "8000", "--bursts", "5"] if small else []),
            ("forks.py", ["--forks", "60", "--events", "8000"] if small else []),
            (
                "server_ingest.py",
                ["--repeats", "1", *(["--no-zenml"] if args.no_zenml else [])]
                if small
                else (["--no-zenml"] if args.no_zenml else []),
            ),
        ):
            print(f"{name} ...", flush=True)
            scripts.append(
                (f"{name} {' '.join(script_args)}".strip(), run_script(name, *script_args))
            )

    write_page(
        page,
        quick=quick,
        seconds=time.monotonic() - started,
        cost=cost,
        zenml_cost=zenml_cost,
        fan_rows=fan_rows,
        latencies=latencies,
        lat_rate=lat_rate,
        lat_count=lat_count,
        ingest=ingest,
        ingest_note=ingest_note,
        scripts=scripts,
    )
    print(f"wrote {page} and {len(list(out_dir.glob('*.png')))} plots")
    return 0


def write_page(
    page: Path,
    *,
    quick: bool,
    seconds: float,
    cost: dict[str, Any],
    zenml_cost: dict[str, Any] | None,
    fan_rows: list[tuple[int, int, float, int, int]],
    latencies: list[float],
    lat_rate: float,
    lat_count: int,
    ingest: dict[str, dict[int, float]],
    ingest_note: str,
    scripts: list[tuple[str, str]],
) -> None:
    load = os.getloadavg()
    lines = [
        "# Benchmark report",
        "",
        f"Written by `benchmarks/report.py{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} at the end, {seconds:.0f} s in all. Loopback only. Absolute numbers "
        "move with the machine's load; read the ratios, measured in the same run.",
        "",
        "## Caller's cost by payload size",
        "",
        "![publish cost by payload size](report/publish_cost_by_size.png)",
        "",
        "| payload bytes | zstream_mp.publish() µs | floor µs | ratio |"
        + (" zenml.streaming.publish µs |" if zenml_cost else ""),
        "|---|---|---|---|" + ("---|" if zenml_cost else ""),
    ]
    for size in cost["ours"]:
        ours, floor = cost["ours"][size], cost["floor"][size]
        row = f"| {int(size):,} | {ours / 1000:.2f} | {floor / 1000:.2f} | {ours / floor:.2f}x |"
        if zenml_cost:
            row += f" {zenml_cost['zenml'][size] / 1000:.2f} |"
        lines.append(row)
    if not zenml_cost:
        lines += ["", "ZenML's publisher not measured: its venv was not found or not used."]
    lines += [
        "",
        "The sender is parked on a socket that never answers, so only the caller's work "
        "(validation, one encoding, enqueue) is timed. ZenML's context lookup and sending are "
        "stubbed out; its caller sizes the payload with pydantic-core's Rust encoder and "
        "leaves the encoding that is sent to its sender thread (stubbed here), while ours "
        "produces the sent bytes in the caller, with the stdlib's encoder unless the `fast` "
        "extra (orjson) is installed: without it, large payloads cost us more in the "
        "caller's thread.",
        "",
        "## Pool fan-out: delivered events/s by workers and batch size",
        "",
        "![fan-out by workers and batch size](report/fanout_by_workers_and_batch.png)",
        "",
        "| batch | workers | events/s | published | held by the server |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {b} | {w} | {r:,.0f} | {p:,} | {h:,} |" for b, w, r, p, h in fan_rows]
    lines += [
        "",
        "Fork-context `Pool`; each worker publishes in bursts of 4,000 (the queue holds "
        "4,096) and flushes between them, never after the last (its exit hooks deliver "
        "that); the clock stops when the server holds every event. On 2 cores more workers "
        "share the same CPUs.",
        "",
        "## Latency: publish() to SSE",
        "",
        "![latency distribution](report/latency.png)",
        "",
        f"{len(latencies):,} of {lat_count:,} events received at {lat_rate:,.0f}/s from one "
        f"publishing process: p50 {percentile(latencies, 50):.1f} ms, p90 "
        f"{percentile(latencies, 90):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, max "
        f"{max(latencies, default=float('nan')):.1f} ms.",
        "",
        "## Server ingest: ours beside ZenML 0.98.0",
        "",
        "![ingest, ours vs ZenML](report/ingest_ours_vs_zenml.png)",
        "",
        "| batch | " + " | ".join(ingest) + " |",
        "|---|" + "---|" * len(ingest),
    ]
    batches = sorted({b for r in ingest.values() for b in r})
    lines += [
        f"| {b:,} | " + " | ".join(f"{ingest[n][b]:,.0f}" for n in ingest) + " |" for b in batches
    ]
    if ingest_note:
        lines += ["", ingest_note]
    if scripts:
        lines += ["", "## The benchmark scripts' own tables", ""]
        for title, text in scripts:
            lines += [f"`benchmarks/{title}`", "", "```", text, "```", ""]
    page.write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
