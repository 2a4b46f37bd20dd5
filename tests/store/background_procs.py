"""Real OS processes for the background-work tests, and the receiver they report to.

The test process runs a ``Receiver`` (a TCP server on 127.0.0.1 that records every line it gets and
answers ``ok``, like an MLLP peer answering with an ACK) and starts workers with::

    python -m tests.store.background_procs outbox URL TOPIC PORT [--batch N] [--lease S] [--stall-after N]
    python -m tests.store.background_procs contend URL NAME PORT --seconds S [--ttl S]
    python -m tests.store.background_procs hold URL NAME PORT [--ttl S]

``outbox`` drains a topic with an ``OutboxWorker`` whose delivery sends the event id to the receiver and
waits for its answer; with ``--stall-after N`` it delivers N events, sends the next one, reports
``stalled`` and hangs before marking it delivered (so the test can kill it mid-batch). ``contend`` takes a
lease again and again, reporting ``enter``/``leave`` around each hold; ``hold`` takes a lease, reports
``acquired`` and renews it until killed.
"""

from __future__ import annotations

import argparse
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine

from gateway.store.database import EngineOptions, make_engine
from gateway.store.leases import Lease
from gateway.store.outbox import OutboxEvent, OutboxWorker, pending_count

DRAIN_DEADLINE_SECONDS = 60.0
ROOT = Path(__file__).resolve().parents[2]
PYCACHE = Path(tempfile.gettempdir()) / "calaim-test-pycache"


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m tests.store.background_procs ARGS`` from the project root (stderr piped).

    Children may cache bytecode outside the tree even where PYTHONDONTWRITEBYTECODE is set: compiling
    SQLAlchemy from source at every start would otherwise double the start time of each worker.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    command = [sys.executable, "-m", "tests.store.background_procs", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for raw in self.rfile:
            with self.server.lock:
                self.server.lines.append(raw.decode().strip())
            self.wfile.write(b"ok\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.lines: list[str] = []


class Receiver:
    """Records lines from any number of connections; a line is recorded before its ``ok`` is sent."""

    def __init__(self) -> None:
        self._server = _Server()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def lines(self) -> list[str]:
        with self._server.lock:
            return list(self._server.lines)

    def counts(self) -> Counter[str]:
        return Counter(self.lines())

    def wait_for(self, line: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver never got {line!r}")
            time.sleep(0.02)


class Client:
    """One connection to the receiver; ``send`` returns once the line is recorded."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._answers = self._sock.makefile("rb")

    def send(self, line: str) -> None:
        self._sock.sendall(line.encode() + b"\n")
        if self._answers.readline() != b"ok\n":
            raise ConnectionError("the receiver did not acknowledge")


def _engine(url: str) -> Engine:
    return make_engine(url, EngineOptions(pool_size=2, max_overflow=2, sqlite_synchronous="NORMAL"))


def run_outbox(args: argparse.Namespace) -> int:
    engine = _engine(args.url)
    client = Client(args.port)
    delivered = 0

    def deliver(event: OutboxEvent) -> None:
        nonlocal delivered
        client.send(str(event.id))
        if args.stall_after is not None and delivered == args.stall_after:
            client.send("stalled")
            time.sleep(3600)  # killed here: sent, not marked delivered, rest of the batch still claimed
        delivered += 1

    worker = OutboxWorker(engine, args.topic, deliver, batch=args.batch, lease_seconds=args.lease)
    deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
    while pending_count(engine, args.topic) > 0:
        if worker.run_once() == 0:
            time.sleep(0.01)  # the rest is claimed by others: look again shortly
        if time.monotonic() > deadline:
            return 2
    return 0


def run_contend(args: argparse.Namespace) -> int:
    engine = _engine(args.url)
    client = Client(args.port)
    lease = Lease(engine, args.name, ttl_seconds=args.ttl)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        if lease.acquire():
            client.send(f"enter {lease.holder}")
            time.sleep(0.02)
            client.send(f"leave {lease.holder}")
            lease.release()
        time.sleep(0.005)
    return 0


def run_hold(args: argparse.Namespace) -> int:
    engine = _engine(args.url)
    client = Client(args.port)
    lease = Lease(engine, args.name, ttl_seconds=args.ttl)
    while not lease.acquire():
        time.sleep(0.05)
    client.send(f"acquired {lease.holder}")
    while lease.renew():
        time.sleep(args.ttl / 4)
    client.send(f"lost {lease.holder}")
    return 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="background_procs")
    commands = parser.add_subparsers(dest="command", required=True)
    outbox = commands.add_parser("outbox")
    outbox.add_argument("url")
    outbox.add_argument("topic")
    outbox.add_argument("port", type=int)
    outbox.add_argument("--batch", type=int, default=25)
    outbox.add_argument("--lease", type=float, default=30.0)
    outbox.add_argument("--stall-after", type=int, default=None)
    for name in ("contend", "hold"):
        command = commands.add_parser(name)
        command.add_argument("url")
        command.add_argument("name")
        command.add_argument("port", type=int)
        command.add_argument("--ttl", type=float, default=1.0)
        command.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    runners = {"outbox": run_outbox, "contend": run_contend, "hold": run_hold}
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
