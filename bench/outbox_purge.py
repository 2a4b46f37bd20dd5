"""Outbox retention cost: ``python -m bench.outbox_purge [--events N] [--rounds R] [--only sqlite|postgresql|both]``.

Each round enqueues ``N`` events, delivers them and ages them past the retention (not timed), then measures
back to back, on the same database:

- the writers' latency without a purge: one thread commits one ``enqueue`` per write transaction (what a
  FHIR write with an outbox event does) for as long as the purge below takes;
- the same writers while ``purge`` deletes the ``N`` events (batches of 500, the defaults of
  gateway/store/outbox_retention.py), and the purge's rate.

Printed: purge events/s, writer transactions/s and p50 / p95 / max latency in ms, without and with the
purge (median of the rounds). "Never blocks writers" reads as: the p95 with the purge stays close to the
one without, and the max stays far below the lock timeout (10 s). Durable commits (``bench.pgsupport``).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from sqlalchemy import Engine, update

from bench.pgsupport import fresh_engines
from gateway.store.database import write_transaction
from gateway.store.outbox import OutboxEvent, OutboxWorker, database_now, enqueue
from gateway.store.outbox_retention import purge
from gateway.store.schema import outbox

TOPIC = "bench.purge"
DAY_US = 86_400 * 1_000_000


def _prepare(engine: Engine, events: int, run: str) -> None:
    for start in range(0, events, 500):
        with write_transaction(engine) as conn:
            for n in range(start, min(events, start + 500)):
                enqueue(conn, topic=TOPIC, payload={"reference": f"ServiceRequest/{n}"}, dedupe_key=f"{run}-{n}")

    def noop(_event: OutboxEvent) -> None:
        return None

    worker = OutboxWorker(engine, TOPIC, noop, batch=500, lease_seconds=600)
    while worker.run_once():
        pass
    with write_transaction(engine) as conn:
        # Everything so far is 40 days old (the writers' pending events too: ids grow with time).
        old = database_now(conn) - 40 * DAY_US
        conn.execute(update(outbox).values(created_at=old))
        conn.execute(update(outbox).where(outbox.c.delivered_at.is_not(None)).values(delivered_at=old))


def _writer(engine: Engine, stop: threading.Event, latencies: list[float], run: str) -> None:
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        with write_transaction(engine) as conn:
            enqueue(conn, topic="bench.writer", payload={"n": n}, dedupe_key=f"{run}-{n}")
        latencies.append(time.perf_counter() - started)
        n += 1


def _measure(engine: Engine, seconds: float | None, run: str) -> tuple[list[float], float, float]:
    """Writer latencies over ``seconds`` (None: while a purge runs); returns (latencies, spent, purged/s)."""
    stop = threading.Event()
    latencies: list[float] = []
    thread = threading.Thread(target=_writer, args=(engine, stop, latencies, run))
    started = time.perf_counter()
    thread.start()
    rate = 0.0
    if seconds is None:
        result = purge(engine, older_than_seconds=30 * 86_400)
        rate = result.deleted / (time.perf_counter() - started)
    else:
        time.sleep(seconds)
    stop.set()
    thread.join()
    return latencies, time.perf_counter() - started, rate


def _summary(latencies: list[float], spent: float) -> tuple[float, float, float, float]:
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95)] if ordered else 0.0
    return len(ordered) / spent, statistics.median(ordered) * 1000, p95 * 1000, ordered[-1] * 1000


def run(engine: Engine, events: int, rounds: int) -> None:
    """Alternate: baseline writers, then writers beside the purge, ``rounds`` times; print medians."""
    base: list[tuple[float, float, float, float]] = []
    during: list[tuple[float, float, float, float]] = []
    rates: list[float] = []
    for r in range(rounds):
        _prepare(engine, events, f"r{r}-{time.monotonic_ns()}")
        with_purge, spent, rate = _measure(engine, None, f"p{r}-{time.monotonic_ns()}")
        alone, alone_spent, _ = _measure(engine, spent, f"b{r}-{time.monotonic_ns()}")
        during.append(_summary(with_purge, spent))
        base.append(_summary(alone, alone_spent))
        rates.append(rate)

    def med(rows: list[tuple[float, float, float, float]], i: int) -> float:
        return statistics.median(row[i] for row in rows)

    print(f"    purge: {statistics.median(rates):,.0f} events/s")
    for name, rows in (("writers alone", base), ("writers + purge", during)):
        print(
            f"    {name}: {med(rows, 0):,.0f} tx/s, p50 {med(rows, 1):.1f} ms, p95 {med(rows, 2):.1f} ms,"
            f" max {med(rows, 3):.1f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    """Print the purge rate and the writers' latency without and with it, per backend."""
    parser = argparse.ArgumentParser(prog="python -m bench.outbox_purge")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("both", "postgresql", "sqlite"), default="both")
    args = parser.parse_args(argv)
    with fresh_engines(args.only, "calaim-bench-purge-") as engines:
        print(f"outbox purge of {args.events} delivered events, batches of 500, {args.rounds} rounds (medians)")
        for name, engine in engines:
            print(f"  {name}:")
            run(engine, args.events, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
