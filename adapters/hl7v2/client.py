"""A blocking MLLP client: one persistent connection, one message at a time, each answered by an ACK
(HL7 v2.5.1 Appendix C). The RRI sender uses it from its worker thread; tests and benchmarks use it as
the county's side.
"""

from __future__ import annotations

import socket
import time

from adapters.hl7v2.mllp import FrameDecoder, frame

MAX_ACK_BYTES = 1024 * 1024


class MllpError(Exception):
    """No ACK: the connection failed, closed or timed out (the message may or may not have arrived)."""


class MllpClient:
    """Send framed messages over one TCP connection, reconnecting when it breaks."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(MAX_ACK_BYTES)
        self._pending: list[bytes] = []

    def connect(self) -> None:
        """Open the connection (done by ``send`` when needed)."""
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                raise MllpError(f"cannot connect: {type(exc).__name__}") from None
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._decoder = FrameDecoder(MAX_ACK_BYTES)
            self._pending = []

    def close(self) -> None:
        """Close the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, message: bytes) -> bytes:
        """Send one message and return the next ACK; ``MllpError`` (and a closed connection) when none came."""
        self.connect()
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(frame(message))
            return self.receive()
        except (OSError, MllpError) as exc:
            self.close()
            raise MllpError(f"no ACK: {type(exc).__name__}") from None

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (framing tests)."""
        self.connect()
        assert self._sock is not None
        self._sock.sendall(data)

    def receive(self, timeout: float | None = None) -> bytes:
        """The next framed message from the peer."""
        sock = self._sock
        if sock is None:
            raise MllpError("not connected")
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MllpError("timed out")
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise MllpError("timed out") from None
            if not data:
                raise MllpError("connection closed by the peer")
            self._pending.extend(f.data for f in self._decoder.feed(data))
        return self._pending.pop(0)

    def __enter__(self) -> MllpClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
