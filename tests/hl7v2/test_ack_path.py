"""Session 9's cheaper ACK path and prepared-message transport give what they replaced (docs/hl7v2.md
"Throughput"): the ACK written by the commit thread (``server.AckWriter``) only when nothing the event loop
buffered can be overtaken, the escape and field-read fast paths, the per-second ACK timestamp, the pickles
of headers and locations, and hl7apy's ``Field`` attribute fast path."""

from __future__ import annotations

import asyncio
import pickle
import random
import socket
from datetime import datetime
from typing import Any

import hl7apy.core
import pytest
from hl7apy.exceptions import HL7apyException

from adapters.hl7v2.mllp import FrameDecoder, frame
from adapters.hl7v2.prepare import Prepared
from adapters.hl7v2.processor import InboundProcessor, Outcome
from adapters.hl7v2.server import AckWriter, GroupCommitter
from gateway.fhir.context import Context
from gateway.settings import Settings
from mappings.hl7v2 import hl7apy_cache
from mappings.hl7v2.er7 import STANDARD, Delimiters, escape, read_header
from mappings.hl7v2.errors import Location
from mappings.hl7v2.message import _field, parse
from tests.hl7v2.support import count, msa, processor_for, ref_i12

SPECIALS = "|^~\\&#$*\r\n"


def _escape_reference(value: str, d: Delimiters) -> str:
    """``er7.escape`` as it was before its fast path (the replacements, always)."""
    for plain, escaped in (
        (d.escape, f"{d.escape}E{d.escape}"),
        (d.field, f"{d.escape}F{d.escape}"),
        (d.component, f"{d.escape}S{d.escape}"),
        (d.subcomponent, f"{d.escape}T{d.escape}"),
        (d.repetition, f"{d.escape}R{d.escape}"),
    ):
        value = value.replace(plain, escaped)
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{d.escape}.br{d.escape}")


def _field_reference(text: str, d: Delimiters) -> tuple[Any, ...]:
    """``message._field`` without its fast path (every split, every unescape)."""
    from mappings.hl7v2.er7 import unescape

    if not text:
        return ()
    return tuple(
        tuple(tuple(unescape(sub, d) for sub in comp.split(d.subcomponent)) for comp in rep.split(d.component))
        for rep in text.split(d.repetition)
    )


def _texts(seed: int, n: int) -> list[str]:
    pick = random.Random(seed)
    alphabet = "abcXYZ019 .-" + SPECIALS
    return ["", "plain", "\\E\\", "a\\F\\b"] + [
        "".join(pick.choice(alphabet) for _ in range(pick.randrange(1, 12))) for _ in range(n)
    ]


def test_escape_and_field_reads_give_what_the_full_path_gives() -> None:
    other = Delimiters(field="#", component="$", repetition="*", escape="!", subcomponent="@")
    for d in (STANDARD, other):
        for text in _texts(9, 3000):
            assert escape(text, d) == _escape_reference(text, d)
            assert _field(text, d) == _field_reference(text, d)


def test_headers_and_locations_pickle_as_themselves() -> None:
    header = read_header(ref_i12("P1", cin="91000031A").encode())
    odd = Delimiters(field="#", component="$", repetition="*", escape="!", subcomponent="@")
    for value in (header, header.delimiters, odd, Location("PID", 1, 3, 2, 1, 1), Location("RF1")):
        copy = pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
        assert copy == value and type(copy) is type(value)


def test_a_prepared_message_crosses_the_process_boundary_unchanged(ctx: Context, settings: Settings) -> None:
    """What the parse worker sends (adapters/hl7v2/parsepool.py): a pickled ``Prepared`` without its bytes."""
    processor = processor_for(ctx, settings)
    for message in (ref_i12("P2", cin="91000032A"), ref_i12("P3", cin="", mrn="")):
        prepared = processor.prepare(message.encode())
        prepared.raw = b""
        copy: Prepared = pickle.loads(pickle.dumps(prepared, pickle.HIGHEST_PROTOCOL))
        assert copy.header == prepared.header and copy.key == prepared.key
        assert (copy.mapped is None) == (prepared.mapped is None)
        if prepared.mapped is not None and copy.mapped is not None:
            assert copy.mapped.sources == prepared.mapped.sources
        assert (copy.error and copy.error.summary) == (prepared.error and prepared.error.summary)


def test_the_ack_timestamp_is_the_current_second_in_the_plans_zone(ctx: Context, settings: Settings) -> None:
    processor = processor_for(ctx, settings)
    for _ in range(3):
        before = datetime.now(processor.config.zone).strftime("%Y%m%d%H%M%S%z")
        stamp = processor.timestamp()
        after = datetime.now(processor.config.zone).strftime("%Y%m%d%H%M%S%z")
        assert stamp in (before, after)


def _field_outcomes(installed: bool) -> list[str]:
    """Assignments to hl7apy ``Field`` objects (plain attributes, ``children``, the ``value`` and ``datatype``
    properties, traversal names, unknown names): the state or the exception each leaves."""
    if installed:
        hl7apy_cache.install()
    else:
        hl7apy_cache.uninstall()
    out: list[str] = []
    attempts: list[tuple[str, str, Any]] = [
        ("PID_3", "value", "9000001A^^^MEDI-CAL^MA"),
        ("PID_3", "cx_1", "9000002A"),
        ("PID_3", "pid_3_4", "MEDI-CAL"),
        ("PID_5", "value", "Doe^Jane^Q"),
        ("PID_5", "xpn_2", "Janet"),
        ("PID_7", "value", "19800101"),
        ("PID_7", "value", "not a date"),
        ("PID_3", "long_name", "identifier"),
        ("PID_3", "table", "HL70203"),
        ("PID_3", "max_length", 250),
        ("PID_3", "no_such_child", "x"),
        ("PID_3", "pid_3_99", "x"),
        ("PID_3", "datatype", "ST"),
        ("PID_3", "children", []),
    ]
    for name, attribute, value in attempts:
        field = hl7apy.core.Field(name, version="2.5")
        try:
            setattr(field, attribute, value)
            out.append(f"{name}.{attribute}: {field.to_er7()} {field.datatype} {field.long_name} {field.table}")
        except (HL7apyException, ValueError, AttributeError, TypeError) as exc:
            out.append(f"{name}.{attribute}: {type(exc).__name__}: {exc}")
    return out


def test_field_assignments_are_hl7apys_own() -> None:
    try:
        assert _field_outcomes(installed=True) == _field_outcomes(installed=False)
    finally:
        hl7apy_cache.install()
    header = read_header(ref_i12("F1", cin="91000033A").encode())
    assert parse(ref_i12("F1", cin="91000033A"), header).names[0] == "MSH"


async def _socket_pair_streams() -> tuple[asyncio.StreamWriter, socket.socket]:
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    theirs.setblocking(False)
    return writer, theirs


def _received(sock: socket.socket) -> list[bytes]:
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return [f.data for f in FrameDecoder(10_000_000).feed(data)]


def test_the_commit_thread_writes_an_ack_only_when_nothing_is_buffered(ctx: Context, settings: Settings) -> None:
    processor = processor_for(ctx, settings)
    prepared = processor.prepare(ref_i12("W1", cin="91000034A").encode())
    [outcome] = processor.commit([prepared])

    async def scenario() -> None:
        from adapters.hl7v2.server import _own_socket

        writer, peer = await _socket_pair_streams()
        own = _own_socket(writer.transport)
        assert own is not None
        try:
            ack_writer = AckWriter(processor, prepared, writer.transport, own)
            ack_writer(outcome)  # nothing buffered: written at once, in full
            assert ack_writer.left == b""
            assert [msa(ack) for ack in _received(peer)] == [("AA", "W1")]

            writer.write(b"x" * (8 << 20))  # the peer does not read: the transport keeps most of it
            assert writer.transport.get_write_buffer_size() > 0
            ack_writer = AckWriter(processor, prepared, writer.transport, own)
            ack_writer(outcome)  # must not overtake the buffered bytes: all of it left to the loop
            assert ack_writer.left == b"".join(frame(a) for a in processor.acks(prepared, outcome))

            no_socket = AckWriter(processor, prepared, writer.transport, None)
            no_socket(outcome)
            assert no_socket.left == ack_writer.left

            writer.transport.abort()  # the connection ended: its duplicate is closed, nothing is sent on it
            await asyncio.sleep(0)
            own.close()
            with pytest.raises(OSError):
                own.send(b"late")
            closed = AckWriter(processor, prepared, writer.transport, own)
            closed(outcome)
            assert closed.left == ack_writer.left
        finally:
            own.close()
            writer.transport.abort()
            peer.close()

    asyncio.run(scenario())


def test_a_cancelled_wait_does_not_stop_the_commit_thread(ctx: Context, settings: Settings) -> None:
    """The listener stops (its connections' waits cancelled) while their messages commit: the commit thread
    skips their answers and goes on with the next groups."""
    processor: InboundProcessor = processor_for(ctx, settings)
    committer = GroupCommitter(processor)
    written: list[Outcome] = []
    try:
        first = processor.prepare(ref_i12("C1", cin="91000035A").encode())
        second = processor.prepare(ref_i12("C2", cin="91000036A").encode())
        cancelled = committer.submit(first, written.append)
        cancelled.cancel()
        assert committer.submit(second, written.append).result(30).code == "AA"
    finally:
        committer.close()
    assert [outcome.code for outcome in written] == ["AA"]  # only the one still awaited was answered
    assert count(ctx, "ServiceRequest") == 2  # both committed: the first one's resend gets its stored ACK
