"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 2; HL7 v2.5.1 Appendix C): a message is
sent as ``0x0B`` (start block) + the message bytes + ``0x1C 0x0D`` (end block).

``FrameDecoder`` is an incremental decoder, independent of sockets (the python-hl7 layering: framing,
decoding, parsing and dispatch apart): feed it whatever a read returned and it yields complete frames,
so partial frames, several messages in one read and messages split anywhere all work. Bytes outside a
frame (garbage before a start block, a stray CR/LF between frames) are counted and dropped. A message
longer than ``max_bytes`` is not buffered: its first bytes are kept (enough for the MSH, to answer it)
and the rest is skipped up to its end block. A start block inside an unfinished frame means the sender
gave that frame up: the partial frame is dropped and the new one read.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
KEEP_OF_OVERSIZED = 4096
"""Bytes kept from an oversized message: its MSH, to answer it with an AR that echoes MSH-10."""


def frame(message: bytes) -> bytes:
    """``message`` in an MLLP block."""
    return START + message + END


@dataclass(frozen=True, slots=True)
class Frame:
    """One received block: the message bytes, or the first bytes of an oversized one (``size`` its length)."""

    data: bytes
    oversized: bool = False
    size: int = 0


class FrameDecoder:
    """Incremental MLLP decoder (module docstring)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._inside = False
        self._skipping = 0  # > 0: bytes of an oversized message seen so far (its content is not kept)
        self._kept = b""
        self.discarded = 0
        """Bytes dropped outside frames (garbage), since the decoder was created."""

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete."""
        self._buffer += data
        frames: list[Frame] = []
        while self._buffer:
            if not self._inside:
                start = self._buffer.find(START)
                if start == -1:
                    self.discarded += len(self._buffer)
                    self._buffer.clear()
                    break
                self.discarded += start
                del self._buffer[: start + 1]
                self._inside = True
            end = self._buffer.find(END)
            restart = self._buffer.find(START)
            if restart != -1 and (end == -1 or restart < end):
                # a new start block inside a frame: the sender abandoned the frame; keep the new one
                self.discarded += restart + self._skipping
                del self._buffer[: restart + 1]
                self._skipping, self._kept = 0, b""
                continue
            if self._skipping:
                if end == -1:
                    # keep a possible first byte of the end block for the next read
                    tail = 1 if self._buffer.endswith(END[:1]) else 0
                    self._skipping += len(self._buffer) - tail
                    del self._buffer[: len(self._buffer) - tail]
                    break
                frames.append(Frame(self._kept, oversized=True, size=self._skipping + end))
                del self._buffer[: end + len(END)]
                self._inside, self._skipping, self._kept = False, 0, b""
                continue
            if end == -1:
                if len(self._buffer) > self.max_bytes:
                    self._kept = bytes(self._buffer[:KEEP_OF_OVERSIZED])
                    self._skipping = len(self._buffer)
                    self._buffer.clear()
                break
            if end > self.max_bytes:
                frames.append(Frame(bytes(self._buffer[:KEEP_OF_OVERSIZED]), oversized=True, size=end))
            else:
                frames.append(Frame(bytes(self._buffer[:end])))
            del self._buffer[: end + len(END)]
            self._inside = False
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held (or skipped) so far."""
        return len(self._buffer) + self._skipping
