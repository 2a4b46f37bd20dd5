"""The drop-directory transport (issue 6, the embedded default): one folder per party under the root.

```
<root>/<org id>/inbox/      files the party sends (an SFTP user lands here: its root is <root>/<org id>)
<root>/<org id>/outbox/     files for the party: outbound files and the error reports of its files
<root>/<org id>/archive/    the party's files whose rows are committed (moved only after the commit)
<root>/<org id>/rejected/   the party's files refused whole (bad header, encoding, name, link, size)
<root>/.work/<org id>/      files being imported (outside every party's SFTP root)
```

A file is taken from an inbox once it has not changed for ``settle_s`` (an upload in progress is left
alone; names starting with ``.`` are in-progress uploads by convention and are skipped). It is refused
unless it is a regular file (no symbolic link, no hard link to elsewhere, no device or folder) with a
plain name (letters, digits, ``.``, ``_``, ``-``) and at most ``max_bytes`` long, and the party's folders
are real folders inside the root. A taken file is first moved to ``.work`` (so a link swapped in after
the check cannot be followed), imported, then moved to ``archive`` (or ``rejected``); after a crash the
files left in ``.work`` are imported again first (the ledger resumes them after their last committed row).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.files.importer import Importer, ImportResult
from adapters.files.writer import fsync_dir

log = logging.getLogger("adapters.files")

FOLDERS = ("inbox", "outbox", "archive", "rejected")
WORK = ".work"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A file refused before import, and why."""

    sender: str
    name: str
    reason: str


class DropDir:
    """The folders of the file exchange under ``root``, for the parties ``parties`` (Organization ids)."""

    def __init__(self, root: Path, parties: list[str]) -> None:
        self.root = root
        self.parties = parties

    def folder(self, party: str, kind: str) -> Path:
        """``<root>/<party>/<kind>`` (created on first use)."""
        if party not in self.parties or kind not in FOLDERS:
            raise ValueError(f"no folder {kind} for {party}")
        path = self.root / party / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def outbox(self, party: str) -> Path:
        """Where files for ``party`` go."""
        return self.folder(party, "outbox")

    def work(self, party: str) -> Path:
        """Where ``party``'s files wait while they are imported."""
        path = self.root / WORK / party
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ensure(self) -> None:
        """Create every party's folders."""
        for party in self.parties:
            for kind in FOLDERS:
                self.folder(party, kind)

    def _inside(self, path: Path) -> bool:
        try:
            return path.resolve(strict=True).is_relative_to(self.root.resolve(strict=True))
        except OSError:
            return False

    # --- taking files ---------------------------------------------------------------------------

    def incoming(self, *, max_bytes: int, settle_s: float) -> Iterator[tuple[str, Path] | Refusal]:
        """Files ready to import, moved to ``.work`` (``(sender, path)``), and refusals (moved to ``rejected``).
        Files already in ``.work`` (a crash interrupted them) come first."""
        for party in self.parties:
            for leftover in sorted(self.work(party).iterdir()):
                if leftover.is_file() and not leftover.is_symlink():
                    yield party, leftover
        now = time.time()
        for party in self.parties:
            inbox = self.root / party / "inbox"
            if not inbox.exists():
                continue
            if inbox.is_symlink() or (self.root / party).is_symlink() or not self._inside(inbox):
                log.warning("inbox of %s is not a folder inside the root: skipped", party)
                continue
            for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                info = entry.stat(follow_symlinks=False)
                problem = self._problem(entry.name, info, max_bytes)
                if problem is None and now - info.st_mtime < settle_s:
                    continue  # still being written
                if problem is not None:
                    yield self._reject(party, Path(entry.path), problem)
                    continue
                target = self.work(party) / entry.name
                Path(entry.path).replace(target)
                fsync_dir(target.parent)
                moved = target.lstat()
                problem = self._problem(entry.name, moved, max_bytes)
                if problem is not None:
                    yield self._reject(party, target, problem)
                    continue
                yield party, target

    @staticmethod
    def _problem(name: str, info: os.stat_result, max_bytes: int) -> str | None:
        if not SAFE_NAME.match(name) or ".." in name:
            return "the file name may hold only letters, digits, '.', '_' and '-' (no paths)"
        if stat.S_ISLNK(info.st_mode):
            return "symbolic links are refused"
        if not stat.S_ISREG(info.st_mode):
            return "only regular files are accepted"
        if info.st_nlink > 1:
            return "hard-linked files are refused"
        if info.st_size > max_bytes:
            return f"the file has {info.st_size} bytes, more than the {max_bytes} accepted"
        return None

    def _reject(self, party: str, path: Path, reason: str) -> Refusal:
        name = path.name if SAFE_NAME.match(path.name) else "refused-file"
        target = self.folder(party, "rejected") / f"{stamp()}-{name}"
        path.replace(target)  # a link is moved as a link: never followed
        fsync_dir(target.parent)
        log.warning("refused a file from %s: %s", party, reason)
        return Refusal(party, name, reason)

    # --- after the import -----------------------------------------------------------------------

    def settle(self, party: str, path: Path, result: ImportResult) -> Path:
        """Move an imported file to ``archive`` (rows committed) or ``rejected`` (refused whole)."""
        kind = "rejected" if result.status == "rejected" else "archive"
        target = self.folder(party, kind) / f"{stamp()}-{path.name}"
        path.replace(target)
        fsync_dir(target.parent)
        return target


def stamp() -> str:
    """A UTC time stamp prefix for archived and rejected files (``20250106T101500123456Z``)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def process_inboxes(
    drop: DropDir, importer: Importer, *, settle_s: float, keepalive: Callable[[int], None] | None = None
) -> list[ImportResult]:
    """Import every ready file of every inbox; refusals get an error report in the sender's outbox.
    ``keepalive`` is called as rows are read (the caller renews its lease there)."""
    results: list[ImportResult] = []
    for item in drop.incoming(max_bytes=importer.max_bytes, settle_s=settle_s):
        if isinstance(item, Refusal):
            results.append(importer.refuse(item.name, item.sender, item.reason, drop.outbox(item.sender)))
            continue
        party, path = item
        result = importer.run(path, sender=party, report_dir=drop.outbox(party), progress=keepalive)
        if result.status != "busy":
            drop.settle(party, path, result)
        results.append(result)
    return results
