"""The asyncio MLLP listener (docs/hl7v2.md "Transport"): persistent connections, many messages per
connection (pipelined ones answered in order), many connections at once.

Per connection, bytes go through a ``FrameDecoder``; each frame is prepared (decode, parse, map: CPU, in
a parse worker process of ``adapters.hl7v2.parsepool``, so that parsing uses the other cores and the
event loop stays free) and handed to the ``GroupCommitter``, which applies the frames
waiting from every connection in one database transaction (one fsync for the group on SQLite), then the
commit thread writes the ACKs itself (``AckWriter``; what the socket does not take at once, the event loop
writes). A connection's messages are answered in the order they arrived.

Logs carry counts, ids and ACK codes only (no message content: it is PHI).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from adapters.hl7v2.mllp import Frame, FrameDecoder, frame
from adapters.hl7v2.parsepool import ParsePool, default_workers
from adapters.hl7v2.prepare import Prepared
from adapters.hl7v2.processor import InboundProcessor, Outcome

log = logging.getLogger("adapters.hl7v2")

READ_SIZE = 65536
MAX_GROUP = 64
"""Most messages committed in one transaction."""
LINGER_S = 0.002
"""How long a group waits, at most, for messages still being prepared (``GroupCommitter``): about one parse."""


T = TypeVar("T")

_Item = tuple[Prepared, "Future[Outcome]", Callable[[Outcome], None] | None]
"""A queued message: what it is, the future of its outcome, and who writes its ACK after the commit."""


class _Call(Generic[T]):
    """Work for the commit thread between two groups (``GroupCommitter.call``)."""

    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        self.future: Future[T] = Future()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.work())
        except Exception as exc:  # the caller's to judge
            self.future.set_exception(exc)


class GroupCommitter:
    """One thread that commits the prepared messages of every connection, as many at a time as are waiting.

    A group is what is queued when the thread takes it, plus what arrives within ``linger_s`` while
    ``in_flight()`` says messages are still being prepared (read but not yet queued): a commit's cost is
    mostly per group (the transaction, its look-ups and its WAL pages: ~2.8 ms of CPU for a group of one
    REF^I12 against ~0.9 ms more per message), and the fsync of ``synchronous=FULL`` is one per group, so
    waiting up to about one parse for a message already in a parse worker costs its predecessor that wait
    and saves both a group's fixed cost and the successor the wait for the predecessor's commit. With
    nothing in flight the group is committed at once (a lone message is not delayed)."""

    def __init__(
        self,
        processor: InboundProcessor,
        *,
        max_group: int = MAX_GROUP,
        linger_s: float = LINGER_S,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.processor = processor
        self.max_group = max_group
        self.linger_s = linger_s
        self.in_flight = in_flight or (lambda: 0)
        """Messages read from a connection and not yet queued here (being prepared)."""
        self.sizes: collections.Counter[int] = collections.Counter()
        """Groups committed, by their number of messages (logged at ``close``: how well groups form)."""
        self.lingered = 0
        """Messages a group waited for (``linger_s``), logged at ``close``."""
        self._collections = _collections()
        """The process's garbage collections so far (``close`` logs those of the committer's life)."""
        self._queue: queue.Queue[_Item | _Call[Any] | None] = queue.Queue()
        self._calls: list[_Call[Any]] = []
        """Calls met while a group was being taken: run right after its commit."""
        self._thread = threading.Thread(target=self._run, name="hl7v2-commit", daemon=True)
        self._thread.start()

    def submit(self, prepared: Prepared, deliver: Callable[[Outcome], None] | None = None) -> Future[Outcome]:
        """Queue ``prepared``; the future completes after its transaction committed (or failed).
        ``deliver``: called in this thread with the outcome right after the commit, before the future
        completes (the listener writes the ACK from here, ``MllpServer``); what it raises is logged and
        ignored (the future still completes)."""
        future: Future[Outcome] = Future()
        self._queue.put((prepared, future, deliver))
        return future

    def call(self, work: Callable[[], T]) -> Future[T]:
        """Run ``work`` in the commit thread, between two groups (right after the group being taken, if any);
        the future has its result or exception. For other writes of the listener's process to the same
        store (``Hl7v2Service``'s lease renewal): made here, they never meet a group's transaction. On
        SQLite a write that finds another one holding the database lock waits in SQLite's busy handler,
        which sleeps 1, 2, 5, 10 ... ms between its attempts: a group that met the renewal (every 5 s, a
        transaction with its fsync) waited for it and then for those sleeps (docs/performance.md "County
        HL7 v2", session 10)."""
        item = _Call(work)
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        while not self._queue.empty():  # calls made after the stop mark: never run
            late = self._queue.get_nowait()
            if isinstance(late, _Call):
                late.future.cancel()
        groups = sum(self.sizes.values())
        if groups:
            messages = sum(size * n for size, n in self.sizes.items())
            shares = ", ".join(f"{size}: {n}" for size, n in sorted(self.sizes.items()))
            (runs, freed), (runs_before, freed_before) = _collections(), self._collections
            log.info(
                "hl7v2: %d messages committed in %d groups (groups by size: %s; %d waited for; "
                "collections by generation %s, %d objects freed by the collector)",
                messages,
                groups,
                shares,
                self.lingered,
                "/".join(str(now - then) for now, then in zip(runs, runs_before, strict=True)),
                sum(freed) - sum(freed_before),
            )

    def _take(self, first: _Item) -> tuple[list[_Item], bool]:
        """The group that starts with ``first`` (class docstring), and whether the stop mark was met."""
        group = [first]
        deadline: float | None = None
        while len(group) < self.max_group:
            waited = False
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                if self.linger_s <= 0 or self.in_flight() <= 0:
                    break
                now = time.monotonic()
                deadline = now + self.linger_s if deadline is None else deadline
                if now >= deadline:
                    break
                try:
                    more = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    break
                waited = True
            if more is None:
                return group, True
            if isinstance(more, _Call):
                self._calls.append(more)
                continue
            self.lingered += waited
            group.append(more)
        return group, False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Call):
                item.run()
                continue
            group, stop = self._take(item)
            self.sizes[len(group)] += 1
            try:
                outcomes = self.processor.commit([prepared for prepared, _, _ in group])
            except Exception as exc:  # commit() answers every message itself; this is a last resort
                log.error("hl7v2: commit failed unexpectedly (%s)", type(exc).__name__)
                outcomes = [self.processor.transient(prepared) for prepared, _, _ in group]
            for (_, future, deliver), outcome in zip(group, outcomes, strict=True):
                if not future.set_running_or_notify_cancel():
                    continue  # the listener stopped waiting for it (it is stopping); the sender resends
                if deliver is not None:
                    try:
                        deliver(outcome)
                    except Exception as exc:  # the listener's path then answers it (``MllpServer._answer``)
                        log.error("hl7v2: an ACK could not be written at once (%s)", type(exc).__name__)
                future.set_result(outcome)
            for prepared, _, _ in group:
                prepared.release()
            calls, self._calls = self._calls, []
            for call in calls:
                call.run()
            if stop:
                return


def _collections() -> tuple[list[int], list[int]]:
    """Python's cyclic garbage collections of this process so far, per generation, and the objects they freed
    (``gc.get_stats``): a committed message should leave nothing for them (``Prepared.release``)."""
    stats = gc.get_stats()
    return [generation["collections"] for generation in stats], [generation["collected"] for generation in stats]


class MllpServer:
    """The listener: ``await start(host, port)``, ``await stop()``."""

    def __init__(
        self,
        processor: InboundProcessor,
        *,
        max_message_bytes: int,
        max_connections: int = 64,
        idle_timeout_s: float = 0,
        parse_workers: int | None = None,
    ) -> None:
        """``parse_workers``: processes for step 1 (None: ``parsepool.default_workers()``; 0: a thread)."""
        self.processor = processor
        self.parse_workers = default_workers() if parse_workers is None else parse_workers
        self.parser: ParsePool | None = None
        self.max_message_bytes = max_message_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.committer: GroupCommitter | None = None
        self.preparing = 0
        """Frames read and not yet handed to the committer (``GroupCommitter.in_flight``)."""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting connections."""
        parser = await asyncio.to_thread(ParsePool, self.processor.preparer, self.parse_workers)  # spawns them
        await asyncio.to_thread(parser.start)
        self.parser = parser
        self.committer = GroupCommitter(self.processor, in_flight=lambda: self.preparing)
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        log.info("hl7v2: MLLP listener on %s:%d", host, self.port)

    async def between_groups(self, work: Callable[[], T]) -> T:
        """``work()`` in the commit thread between two groups (``GroupCommitter.call``), or in a thread of its
        own when the listener is not running."""
        committer = self.committer
        if committer is None:
            return await asyncio.to_thread(work)
        return await asyncio.wrap_future(committer.call(work))

    async def stop(self) -> None:
        """Stop accepting, end the connections (a message being processed is answered first if it can)."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        if self.committer is not None:
            await asyncio.to_thread(self.committer.close)
            self.committer = None
        if self.parser is not None:
            await self.parser.aclose()
            self.parser = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            log.warning("hl7v2: connection refused: %d connections open", len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ack_socket = _own_socket(writer.transport)
        try:
            await self._frames(reader, writer, ack_socket)
        finally:
            if ack_socket is not None:
                ack_socket.close()

    async def _frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ack_socket: AckSocket | None
    ) -> None:
        decoder = FrameDecoder(self.max_message_bytes)
        while True:
            if self.idle_timeout_s:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout_s)
            else:
                data = await reader.read(READ_SIZE)
            if not data:
                if decoder.pending:
                    log.info("hl7v2: connection closed inside a frame (%d bytes dropped)", decoder.pending)
                return
            before = decoder.discarded
            frames = decoder.feed(data)
            if decoder.discarded > before:
                log.info("hl7v2: %d bytes outside MLLP blocks dropped", decoder.discarded - before)
            for received in frames:
                left = await self._answer(received, writer.transport, ack_socket)
                if left:
                    writer.write(left)
                await writer.drain()

    async def _answer(self, received: Frame, transport: asyncio.BaseTransport, ack_socket: AckSocket | None) -> bytes:
        """One frame of a connection, answered: its ACKs are written by the commit thread right after the
        commit when the connection's socket takes them (``AckWriter``); what it did not write is returned,
        framed, for the event loop to write."""
        prepared = await self._prepare(received)
        committer = self.committer
        assert committer is not None
        ack_writer = AckWriter(self.processor, prepared, transport, ack_socket)
        await asyncio.wrap_future(committer.submit(prepared, ack_writer))
        return ack_writer.left

    async def _prepare(self, received: Frame) -> Prepared:
        """Step 1 of a frame, in a parse worker; counted in ``preparing`` meanwhile (the committer's linger)."""
        parser = self.parser
        assert parser is not None
        too_large = received.size if received.oversized else None
        self.preparing += 1
        try:
            return await parser.prepare(received.data, too_large=too_large, limit=self.max_message_bytes)
        finally:
            self.preparing -= 1


class AckWriter:
    """Writes a message's ACKs from the commit thread, right after its group's commit (session 9).

    Until then the commit thread completed a future, the event loop woke up (a write to its self-pipe) and,
    once it had the GIL back from the commit thread (busy with the next group, up to the 5 ms switch
    interval), wrote the ACK: measured under 4 paced connections, that step took 0.3-0.7 ms at the median
    and 5-16 ms at p99 (docs/performance.md "County HL7 v2", session 9). The commit thread holds the GIL
    already, so it writes the bytes to the connection's socket itself (non-blocking ``send``), in the order
    of its group, as soon as they are durable.

    It writes only when nothing else can: the connection's coroutine is waiting for this very message (a
    connection has one message in flight: the next frame is read after its answer), and the transport has
    nothing buffered (else ``left`` keeps every byte, so the loop writes them after what it buffered; order
    is kept). Bytes the socket did not take (a full send buffer), or all of them when the socket refused or
    is closing, are left to the event loop in ``left``: it writes them as before (and learns of a closed
    connection as before). The ACKs are those ``InboundProcessor.acks`` gives, after the commit, as before.
    """

    def __init__(
        self,
        processor: InboundProcessor,
        prepared: Prepared,
        transport: asyncio.BaseTransport,
        sock: AckSocket | None,
    ) -> None:
        self.processor = processor
        self.prepared = prepared
        self.transport = transport
        self.sock = sock
        """The connection's own duplicate of the transport's socket (``_own_socket``), None: never written here."""
        self.left = b""
        """Framed ACK bytes for the event loop to write (none when the commit thread wrote them all)."""

    def __call__(self, outcome: Outcome) -> None:
        """In the commit thread, after the commit (``GroupCommitter.submit``'s ``deliver``)."""
        data = b"".join(frame(ack) for ack in self.processor.acks(self.prepared, outcome))
        self.left = data
        transport, sock = self.transport, self.sock
        if sock is None or not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            return  # bytes the loop buffered go first
        try:
            sent = sock.send(data)
        except OSError:  # would block, reset, closed: the event loop writes them and finds out, as before
            return
        self.left = data[sent:]


class AckSocket:
    """A connection's own duplicate of its socket, for ``AckWriter`` (non-blocking, as the transport's).

    ``send`` and ``close`` hold one lock: the connection's coroutine closes it when the connection ends
    (even while a cancelled wait's message is still being answered in the commit thread), and a send after
    that fails instead of reaching a descriptor number the kernel has given to another connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._closed = False

    def send(self, data: bytes) -> int:
        """Bytes of ``data`` the socket took at once; ``OSError`` when it would block, or is closed."""
        with self._lock:
            if self._closed:
                raise OSError("the connection ended")
            return self._sock.send(data)

    def close(self) -> None:
        """Close the duplicate (the transport's socket stays the event loop's)."""
        with self._lock:
            self._closed = True
            self._sock.close()


def _own_socket(transport: asyncio.BaseTransport) -> AckSocket | None:
    """A duplicate of a connection's socket for ``AckWriter``, closed when the connection ends (``AckSocket``).
    None when the transport has no socket (then the loop writes)."""
    transport_socket = transport.get_extra_info("socket")
    if transport_socket is None:
        return None
    try:
        own = socket.socket(fileno=os.dup(transport_socket.fileno()))
    except OSError:
        return None
    own.setblocking(False)
    return AckSocket(own)
