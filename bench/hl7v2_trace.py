"""Where an ACK's time goes under a paced load: a per-stage trace of every message and of the slowest ones
(docs/performance.md "County HL7 v2").

``.venv/bin/python -m bench.hl7v2 --trace [--rate 200 --paced-seconds 10]`` starts ``calaim-gateway mllp``
through this module (``serve``), which wraps a few of the listener's methods with timestamps
(``time.monotonic``: one clock for every process of the machine) before it runs the command as the CLI
does; nothing of the gateway is changed otherwise. Per message (keyed by MSH-10):

- ``to worker``: its frame read by the event loop → its parse begins in the worker (the event loop's
  send, the worker's queue);
- ``worker``: step 1 in the worker (wall; ``worker CPU`` its thread time);
- ``back``: step 1 done → the ``Prepared`` back in the event loop (pickle, socket, the loop's turn);
- ``wait``: → the commit thread starts taking the group it is in (the group in progress);
- ``linger``: the taking of its group (``GroupCommitter.linger_s``);
- ``commit``: ``InboundProcessor.commit`` of its group (wall);
- ``ack``: → its ACK handed to the socket (``AckWriter``).

Besides: the garbage collector's pauses (``gc.callbacks``, every process), the WAL checkpoints
(``WalCheckpointer``) and the lease renewals, printed next to the slowest messages they overlap.
The trace costs a few µs per stage; its figures are for finding where the tail comes from, not for the
throughput table.
"""

from __future__ import annotations

import gc
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRACE_DIR = "CALAIM_BENCH_TRACE_DIR"
"""The directory the traced gateway writes into (set by ``traced_run``)."""
_CONTROL_ID = re.compile(rb"\|REF\^I12\^REF_I12\|([^|]*)\|")
STAGES = ("total", "to worker", "worker", "worker CPU", "back", "wait", "linger", "commit", "ack")

_pauses: list[tuple[int, float, float]] = []
"""(generation, start, end) of this process's collections."""
_started: dict[int, float] = {}


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    thread = threading.get_ident()
    if phase == "start":
        _started[thread] = time.monotonic()
    elif thread in _started:
        _pauses.append((int(info["generation"]), _started.pop(thread), time.monotonic()))


def _control_id(raw: bytes) -> str:
    found = _CONTROL_ID.search(raw)
    return found.group(1).decode() if found else ""


def _trace_workers(directory: Path) -> None:
    """In a parse worker (this module is its ``__mp_main__``): one line per message, and its collections."""
    import adapters.hl7v2.prepare as prepare

    original = prepare.Preparer.prepare
    out = (directory / f"worker-{os.getpid()}.jsonl").open("a", buffering=1)

    def traced(self: Any, raw: bytes, **options: Any) -> Any:
        start, cpu = time.monotonic(), time.thread_time()
        prepared = original(self, raw, **options)
        end = time.monotonic()
        out.write(json.dumps([_control_id(raw), start, end, time.thread_time() - cpu, _pauses[-20:]]) + "\n")
        _pauses.clear()
        return prepared

    preparer: Any = prepare.Preparer
    preparer.prepare = traced
    gc.callbacks.append(_on_collection)


if __name__ == "__mp_main__" and os.environ.get(TRACE_DIR):  # a parse worker of the traced gateway
    _trace_workers(Path(os.environ[TRACE_DIR]))


def serve(argv: list[str]) -> None:
    """``calaim-gateway`` with ``argv``, traced; the trace is written to ``$CALAIM_BENCH_TRACE_DIR`` at exit."""
    import adapters.hl7v2.processor as processor
    import adapters.hl7v2.server as server
    import gateway.cli
    import gateway.store.checkpoint as checkpoint
    import gateway.store.leases as leases

    events: dict[str, dict[str, float]] = {}
    spans: dict[str, list[tuple[float, float]]] = {"checkpoint": [], "lease": []}

    def stamp(control_id: str, **moments: float) -> None:
        events.setdefault(control_id, {}).update(moments)

    def key(prepared: Any) -> str:
        return prepared.header.control_id if prepared.header is not None else ""

    answer, prepare_ = server.MllpServer._answer, server.MllpServer._prepare
    take, commit = server.GroupCommitter._take, processor.InboundProcessor.commit
    ack_writer = server.AckWriter.__call__

    async def traced_answer(self: Any, received: Any, *args: Any) -> bytes:
        # Stamped before the wait: the last message's wait is cancelled when the bench stops the gateway
        # right after its ACK arrived, and a stamp after it was then lost (the message left untraced).
        stamp(_control_id(received.data), read=time.monotonic())
        left: bytes = await answer(self, received, *args)
        return left

    async def traced_prepare(self: Any, received: Any) -> Any:
        prepared = await prepare_(self, received)
        stamp(key(prepared), prepared=time.monotonic())
        return prepared

    def traced_take(self: Any, first: Any) -> Any:
        start = time.monotonic()
        group, stop = take(self, first)
        for prepared, _, _ in group:
            stamp(key(prepared), take=start, taken=time.monotonic())
        return group, stop

    def traced_commit(self: Any, batch: list[Any]) -> Any:
        start = time.monotonic()
        outcomes = commit(self, batch)
        for prepared in batch:
            stamp(key(prepared), commit=start, committed=time.monotonic())
        return outcomes

    def traced_ack(self: Any, outcome: Any) -> None:
        ack_writer(self, outcome)
        stamp(key(self.prepared), acked=time.monotonic())

    def spanned(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def traced(*args: Any) -> Any:
            start = time.monotonic()
            try:
                return method(*args)
            finally:
                spans[name].append((start, time.monotonic()))

        return traced

    listener: Any = server.MllpServer  # the classes whose methods are wrapped (Any: assigned to)
    committer: Any = server.GroupCommitter
    inbound: Any = processor.InboundProcessor
    acks: Any = server.AckWriter
    checkpointer: Any = checkpoint.WalCheckpointer
    lease: Any = leases.Lease
    listener._answer, listener._prepare = traced_answer, traced_prepare
    committer._take, inbound.commit, acks.__call__ = traced_take, traced_commit, traced_ack
    checkpointer._checkpoint = spanned("checkpoint", checkpointer._checkpoint)
    lease.renew = spanned("lease", lease.renew)
    gc.callbacks.append(_on_collection)
    sys.argv = ["calaim-gateway", *argv]
    try:
        gateway.cli.main()
    finally:
        trace = {"events": events, "spans": spans, "pauses": _pauses}
        (Path(os.environ[TRACE_DIR]) / "listener.json").write_text(json.dumps(trace))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def report(directory: Path, prefix: str, slowest: int = 10) -> list[str]:
    """The stage table of the messages whose MSH-10 starts with ``prefix`` and the ``slowest`` of them."""
    trace = json.loads((directory / "listener.json").read_text())
    worker: dict[str, list[Any]] = {}
    for path in directory.glob("worker-*.jsonl"):
        for line in path.read_text().splitlines():
            control_id, *rest = json.loads(line)
            worker[control_id] = rest
    rows: list[dict[str, float]] = []
    for control_id, moments in trace["events"].items():
        need = ("read", "prepared", "take", "taken", "commit", "committed", "acked")
        if not control_id.startswith(prefix) or control_id not in worker or not all(k in moments for k in need):
            continue
        start, end, cpu, _ = worker[control_id]
        m = moments
        stages = (
            m["acked"] - m["read"],
            start - m["read"],
            end - start,
            cpu,
            m["prepared"] - end,
            max(0.0, m["take"] - m["prepared"]),
            m["taken"] - max(m["take"], m["prepared"]),
            m["committed"] - m["commit"],
            m["acked"] - m["committed"],
        )
        rows.append({"read": m["read"], "acked": m["acked"], **dict(zip(STAGES, stages, strict=True))})
    if not rows:
        return ["no traced message"]
    lines = [f"{len(rows)} messages; ms per stage: mean / p50 / p90 / p99 / max"]
    for stage in STAGES:
        values = [row[stage] * 1000 for row in rows]
        figures = (statistics.fmean(values), *(_percentile(values, p) for p in (50, 90, 99)), max(values))
        lines.append(f"  {stage:<11}" + "".join(f"{v:9.2f}" for v in figures))
    begin, finish = min(row["read"] for row in rows), max(row["acked"] for row in rows)
    pauses = [(g, a, b) for g, a, b in trace["pauses"] if begin <= a <= finish]
    worker_pauses = [tuple(p) for rest in worker.values() for p in rest[3] if begin <= p[1] <= finish]
    for name, found in (("listener", pauses), ("parse workers", worker_pauses)):
        by = {g: [(b - a) * 1000 for gg, a, b in found if gg == g] for g in (0, 1, 2)}
        text = ", ".join(f"gen{g} {len(v)} ({sum(v):.1f} ms, max {max(v, default=0):.1f})" for g, v in by.items())
        lines.append(f"collections in the {name} during the run: {text}")
    for name, spans in trace["spans"].items():
        walls = [(b - a) * 1000 for a, b in spans if begin <= a <= finish]
        lines.append(f"{name}: {len(walls)}, ms " + " ".join(f"{w:.1f}" for w in walls[:20]))
    lines.append(f"the {slowest} slowest (ms), with what overlapped them:")
    for row in sorted(rows, key=lambda r: -r["total"])[:slowest]:
        a, b = row["read"], row["acked"]
        overlaps = [f"gen{g} {1000 * (z - y):.1f}" for g, y, z in pauses if y < b and z > a and z - y > 0.001]
        overlaps += [f"{n} {1000 * (z - y):.1f}" for n, s in trace["spans"].items() for y, z in s if y < b and z > a]
        figures_of = " ".join(f"{s} {row[s] * 1000:.1f}" for s in STAGES)
        lines.append(f"  {figures_of}" + (f"  [{', '.join(overlaps)}]" if overlaps else ""))
    return lines


def traced_run(rate: float, seconds: float, warm_up: int) -> list[str]:
    """A traced gateway on a fresh SQLite file, ``warm_up`` messages closed loop, then ``rate``/s paced for
    ``seconds`` over 4 connections (as ``bench.hl7v2.paced_run``): its report."""
    from bench import hl7v2

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        env = {**os.environ, "CALAIM_LOG_LEVEL": "info", "CALAIM_SQLITE_SYNCHRONOUS": "FULL", TRACE_DIR: tmp}
        port = hl7v2.free_port()
        database = f"sqlite:///{directory / 'gw.db'}"
        command = [sys.executable, "-m", "bench.hl7v2_trace", "mllp", "--port", str(port), "--database-url", database]
        with hl7v2.Process(command, env, port) as served:
            hl7v2.closed_loop(port, [hl7v2.ref_i12(n, "W") for n in range(warm_up)], 4)
            run = hl7v2.paced(port, [hl7v2.ref_i12(n, "T") for n in range(int(rate * seconds))], rate)
        head = (
            f"paced at {rate:.0f}/s, 4 connections, after {warm_up}: achieved {run.rate:.0f}/s, "
            f"ACK latency p50 {run.percentile(50):.1f} ms, p99 {run.percentile(99):.1f} ms; "
            f"{hl7v2._groups(served.output())}"
        )
        return [head, *report(directory, "T-")]


if __name__ == "__main__":
    serve(sys.argv[1:])
