"""Durable, atomic writes of exchange files: records go to a hidden temporary name in the target folder,
which is flushed, fsynced and renamed to its final name (and the folder fsynced), so a reader (the drop
folder's recipient, an SFTP client) sees either no file or the whole file, and a file that exists
survives a crash (issue 6: "write to a temp name, fsync, rename")."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import TextIO

from mappings.files.layout import DELIMITER


class AtomicFile:
    """``with AtomicFile(path) as out: out.write(fields) ...``: the file appears at ``path`` on a clean exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}.tmp")
        self.sha256 = ""
        self._digest = hashlib.sha256()
        self._stream: TextIO | None = None
        self.records = 0

    def __enter__(self) -> AtomicFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = self.temp.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._stream, delimiter=DELIMITER, lineterminator="\n")
        return self

    def write(self, fields: list[str]) -> None:
        """Write one record."""
        self._writer.writerow(fields)
        self.records += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        stream = self._stream
        assert stream is not None
        if kind is not None:
            stream.close()
            self.temp.unlink(missing_ok=True)
            return
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        with self.temp.open("rb") as done:
            while block := done.read(1024 * 1024):
                self._digest.update(block)
        self.sha256 = self._digest.hexdigest()
        self.temp.replace(self.path)
        fsync_dir(self.path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: fsync the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
