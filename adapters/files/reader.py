"""Streaming reads of exchange files: a first pass for the digest, the size and the encoding, then the
records one by one with their line numbers (constant memory whatever the file's size).

The encoding is checked over the whole file before any row is applied, so a file that is not UTF-8 is
rejected whole (issue 6) instead of half-applied up to its first bad byte. A UTF-8 byte order mark is
accepted and skipped.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mappings.files.layout import DELIMITER

BLOCK = 1024 * 1024
BOM = codecs.BOM_UTF8


@dataclass(frozen=True, slots=True)
class Prescan:
    """What the first pass found."""

    sha256: str
    size: int
    lines: int
    bad_encoding_line: int | None
    """The line of the first byte sequence that is not UTF-8 (None: the file is UTF-8)."""


def prescan(path: Path) -> Prescan:
    """Hash, size, line count and UTF-8 check of the file, in one pass over blocks."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size = lines = 0
    last = b"\n"
    bad: int | None = None
    with path.open("rb") as stream:
        while block := stream.read(BLOCK):
            digest.update(block)
            size += len(block)
            if bad is None:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    bad = lines + block[: max(exc.start, 0)].count(b"\n") + 1
            lines += block.count(b"\n")
            last = block[-1:]
        if bad is None:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                bad = lines + 1
    return Prescan(digest.hexdigest(), size, lines + (0 if last == b"\n" else 1), bad)


def records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every record (blank lines skipped); the line number is the record's
    last physical line (a quoted field may span lines)."""
    with path.open("rb") as raw:
        head = raw.read(len(BOM))
        if head != BOM:
            raw.seek(0)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        reader = csv.reader(text, delimiter=DELIMITER, quoting=csv.QUOTE_MINIMAL, strict=False)
        for fields in reader:
            if not fields or fields == [""]:
                continue
            yield reader.line_num, fields
