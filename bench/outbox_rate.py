"""Outbox delivery throughput: ``python -m bench.outbox_rate [--events N] [--only postgresql|sqlite|both]``.

Events are enqueued (500 per transaction, not timed), then 1, 2 and 4 ``OutboxWorker`` threads with a
no-op ``deliver`` drain the topic: claim a batch of 50 (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), then one fenced ``complete`` per event. The rate is the ceiling of the
outbox machinery itself (a real receiver adds its own latency per event), the number behind the
"Kafka for outbox fan-out" trigger of docs/scaling.md. Both databases are durable (SQLite
synchronous=FULL; PostgreSQL fsync=on, synchronous_commit=on: see ``bench.pgsupport``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from sqlalchemy import Engine

from bench.pgsupport import fresh_engines
from gateway.store.database import write_transaction
from gateway.store.outbox import OutboxEvent, OutboxWorker, enqueue, pending_count

TOPIC = "bench.outbox"


def _fill(engine: Engine, events: int, run: str) -> None:
    for start in range(0, events, 500):
        with write_transaction(engine) as conn:
            for n in range(start, min(events, start + 500)):
                enqueue(
                    conn, topic=TOPIC, payload={"n": n, "reference": f"ServiceRequest/{n}"}, dedupe_key=f"{run}-{n}"
                )


def drain_rate(engine: Engine, events: int, workers: int) -> float:
    """Events/s for ``workers`` threads to deliver ``events`` freshly enqueued events."""
    _fill(engine, events, f"w{workers}-{time.monotonic_ns()}")

    def noop(_event: OutboxEvent) -> None:
        return None

    def work() -> None:
        worker = OutboxWorker(engine, TOPIC, noop, batch=50, lease_seconds=60)
        while worker.run_once():
            pass

    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = time.perf_counter() - started
    left = pending_count(engine, TOPIC)
    if left:
        raise RuntimeError(f"{left} events were not delivered")
    return events / spent


def main(argv: list[str] | None = None) -> int:
    """Print events/s per backend and worker count."""
    parser = argparse.ArgumentParser(prog="python -m bench.outbox_rate")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--only", choices=("both", "postgresql", "sqlite"), default="both")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    with fresh_engines(args.only, "calaim-bench-outbox-") as engines:
        print(f"outbox delivery, {args.events} events per run, no-op deliver, batch 50, durable commits")
        for name, engine in engines:
            rates = [drain_rate(engine, args.events, w) for w in counts]
            cells = ", ".join(f"{w} worker(s): {r:,.0f} events/s" for w, r in zip(counts, rates, strict=True))
            print(f"  {name}: {cells}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
