"""MLLP over real TCP sockets: the framing decoder, and the listener with partial frames, several messages
in one read, garbage, oversized messages, many connections, and resends after a dropped connection."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from adapters.hl7v2.client import MllpClient, MllpError
from adapters.hl7v2.mllp import END, START, FrameDecoder, frame
from adapters.hl7v2.server import GroupCommitter
from gateway.fhir.context import Context
from gateway.settings import Settings
from tests.hl7v2.support import ServerThread, count, msa, processor_for, ref_i12


def test_decoder_partial_frames_and_several_per_read() -> None:
    decoder = FrameDecoder(1000)
    stream = frame(b"one") + frame(b"two") + frame(b"three")
    frames = [f.data for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])]  # byte by byte
    assert frames == [b"one", b"two", b"three"]
    assert [f.data for f in decoder.feed(stream)] == [b"one", b"two", b"three"]  # all in one read
    assert decoder.discarded == 0 and decoder.pending == 0


def test_decoder_drops_garbage_and_abandoned_frames() -> None:
    decoder = FrameDecoder(1000)
    assert [f.data for f in decoder.feed(b"noise\r\n" + frame(b"a") + b"\r\n" + START + b"half" + frame(b"b"))] == [
        b"a",
        b"b",
    ]
    assert decoder.discarded == len(b"noise\r\n") + len(b"\r\n") + len(b"half")


def test_decoder_skips_oversized_messages_but_keeps_their_header() -> None:
    decoder = FrameDecoder(100)
    big = b"MSH|^~\\&|" + b"x" * 500
    out = []
    for chunk in (START + big[:300], big[300:], END[:1], END[1:] + frame(b"small")):
        out += decoder.feed(chunk)
    assert [(f.oversized, f.size, f.data[:9]) for f in out] == [(True, len(big), b"MSH|^~\\&|"), (False, 0, b"small")]
    assert decoder.pending == 0


@pytest.fixture
def server(ctx: Context, settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(processor_for(ctx, settings), max_message_bytes=20_000) as running:
        yield running


def read_acks(sock: socket.socket, n: int, timeout: float = 20) -> list[bytes]:
    decoder = FrameDecoder(1_000_000)
    acks: list[bytes] = []
    sock.settimeout(timeout)
    while len(acks) < n:
        data = sock.recv(65536)
        assert data, "connection closed"
        acks += [f.data for f in decoder.feed(data)]
    return acks


def test_tcp_partial_frames_garbage_and_pipelining(ctx: Context, server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"\r\n garbage before the start block ")
        first = frame(ref_i12("T1", cin="91000001A").encode())
        for i in range(0, len(first), 7):  # a frame split into many small writes
            sock.sendall(first[i : i + 7])
            time.sleep(0.001)
        # two more messages in one write, sent before any ACK was read
        sock.sendall(frame(ref_i12("T2", cin="91000002A").encode()) + frame(ref_i12("T3", cin="91000003A").encode()))
        acks = read_acks(sock, 3)
    assert [msa(a) for a in acks] == [("AA", "T1"), ("AA", "T2"), ("AA", "T3")]  # in order, one connection
    assert count(ctx, "ServiceRequest") == 3


def test_tcp_oversized_and_malformed_messages_keep_the_connection(ctx: Context, server: ServerThread) -> None:
    huge = ref_i12("BIG", extra=("NTE|2||" + "x" * 50_000,)).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(huge) + frame(b"MSH|^~\\&|A|B|C|D|1||REF^I12|BAD|P|2.5.1\rRF1|P\rP!D|x\r"))
        sock.sendall(frame(ref_i12("OK1").encode()))
        acks = read_acks(sock, 3)
    assert [msa(a) for a in acks] == [("AR", "BIG"), ("AE", "BAD"), ("AA", "OK1")]
    assert b"at most 20000" in acks[0]
    assert count(ctx, "ServiceRequest") == 1


def test_many_connections_at_once(ctx: Context, server: ServerThread) -> None:
    results: dict[int, list[tuple[str, str]]] = {}

    def run(n: int) -> None:
        with MllpClient("127.0.0.1", server.port, timeout=30) as client:
            results[n] = [msa(client.send(ref_i12(f"C{n}-{i}", cin=f"9{n:03d}{i:04d}A").encode())) for i in range(5)]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == list(range(8))
    assert all(codes == [("AA", f"C{n}-{i}") for i in range(5)] for n, codes in results.items())
    assert count(ctx, "ServiceRequest") == 40 and count(ctx, "Task") == 40


def test_resend_after_a_dropped_connection_is_applied_once(ctx: Context, server: ServerThread) -> None:
    message = frame(ref_i12("D1").encode())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)  # the sender gives up before reading the ACK
    deadline = time.monotonic() + 20
    while count(ctx, "ServiceRequest") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    with MllpClient("127.0.0.1", server.port) as client:
        assert msa(client.send(ref_i12("D1").encode())) == ("AA", "D1")
    assert count(ctx, "ServiceRequest") == 1 and count(ctx, "Task") == 1


def test_client_times_out_without_an_ack() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        client = MllpClient("127.0.0.1", silent.getsockname()[1], timeout=0.3)
        with pytest.raises(MllpError):
            client.send(b"MSH|^~\\&|x")


ERRORS = (
    ref_i12("W1", service="not-a-service").encode(),  # AE at RF1-3 (the mapping)
    ref_i12("W2", extra=("P1D|x",)).encode(),  # AE: not a segment of v2.5.1 (hl7apy)
    ref_i12("W3", version="9.9").encode(),  # AR 203 (the header check)
)


def _answers(port: int, good: str) -> list[tuple[tuple[str, str], list[str]]]:
    """(MSA-1, MSA-2) and the ERR segments of the answers to ``ERRORS`` and to one good message."""
    with MllpClient("127.0.0.1", port, timeout=60) as client:
        acks = [client.send(message) for message in (*ERRORS, ref_i12(good, cin="91000009A").encode())]
    return [(msa(ack), [line for line in ack.decode().split("\r") if line.startswith("ERR")]) for ack in acks]


def test_parse_workers_answer_as_a_thread_does(ctx: Context, settings: Settings) -> None:
    processor = processor_for(ctx, settings)
    with ServerThread(processor, parse_workers=2) as in_workers:
        parser = in_workers.server.parser
        assert parser is not None and len(parser.worker_pids()) == 2
        from_workers = _answers(in_workers.port, "W4")
    with ServerThread(processor, parse_workers=0) as in_thread:
        from_thread = _answers(in_thread.port, "W5")  # AE/AR are not final: W1-W3 are processed again
    assert [code for code, _ in from_workers] == [("AE", "W1"), ("AE", "W2"), ("AR", "W3"), ("AA", "W4")]
    assert from_workers[:3] == from_thread[:3]  # the same codes and ERR segments, field for field
    assert all(errs for _, errs in from_workers[:3])
    assert from_thread[3][0] == ("AA", "W5")
    assert count(ctx, "ServiceRequest") == 1  # W5 is the same member and service: the open referral


def test_a_dead_parse_worker_does_not_stop_the_listener(ctx: Context, settings: Settings) -> None:
    with ServerThread(processor_for(ctx, settings), parse_workers=1) as running:
        parser = running.server.parser
        assert parser is not None
        (pid,) = parser.worker_pids()
        os.kill(pid, signal.SIGKILL)
        with MllpClient("127.0.0.1", running.port, timeout=60) as client:
            acks = [client.send(ref_i12(f"K{i}", cin=f"9100001{i}A").encode()) for i in range(3)]
        assert parser.restarts == 1 and len(parser.worker_pids()) == 1 and parser.worker_pids() != [pid]
    assert [msa(ack) for ack in acks] == [("AA", "K0"), ("AA", "K1"), ("AA", "K2")]
    assert count(ctx, "ServiceRequest") == 3


def test_a_group_waits_for_messages_being_prepared_only(ctx: Context, settings: Settings) -> None:
    """``GroupCommitter``: with messages in flight (read, still being prepared) a group waits up to its linger
    for them, so they commit together; with none in flight a lone message is committed at once."""
    processor = processor_for(ctx, settings)
    in_flight = [0]
    committer = GroupCommitter(processor, linger_s=5.0, in_flight=lambda: in_flight[0])
    try:
        first = processor.prepare(ref_i12("L1", cin="91000021A").encode())
        second = processor.prepare(ref_i12("L2", cin="91000022A").encode())
        in_flight[0] = 1
        futures = [committer.submit(first)]
        time.sleep(0.2)  # the group of ``first`` is waiting for the message in flight
        assert not futures[0].done()
        in_flight[0] = 0
        futures.append(committer.submit(second))
        outcomes = [future.result(30) for future in futures]
        alone = committer.submit(processor.prepare(ref_i12("L3", cin="91000023A").encode()))
        started = time.monotonic()
        assert alone.result(30).code == "AA" and time.monotonic() - started < 4.0  # no linger: nothing in flight
    finally:
        committer.close()
    assert [o.code for o in outcomes] == ["AA", "AA"]
    assert committer.sizes == {2: 1, 1: 1} and committer.lingered == 1
    assert count(ctx, "ServiceRequest") == 3


def test_a_message_step_1_cannot_map_is_answered_and_the_worker_lives(ctx: Context, settings: Settings) -> None:
    """A message on which a map fails unexpectedly (here an AUT-8 of 30 digits, which no JSON writer takes)
    gets an AE from step 1 or the commit instead of ending the parse worker; the next message is applied."""
    with ServerThread(processor_for(ctx, settings), parse_workers=1) as running:
        parser = running.server.parser
        assert parser is not None
        pids = parser.worker_pids()
        odd = ref_i12("U1", cin="91000031A").replace("|||24", "|||" + "9" * 30).encode()
        short = ref_i12("U2", cin="91000032A").replace("\rIN1|", "\r\x1b\rIN1|").encode()
        with MllpClient("127.0.0.1", running.port, timeout=60) as client:
            acks = [client.send(message) for message in (odd, short, ref_i12("U3", cin="91000033A").encode())]
        assert parser.restarts == 0 and parser.worker_pids() == pids
    assert [msa(ack) for ack in acks] == [("AE", "U1"), ("AE", "U2"), ("AA", "U3")]
    assert count(ctx, "ServiceRequest") == 1
