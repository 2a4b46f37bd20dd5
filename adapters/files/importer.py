"""Import of one inbound file (issue 6 "Transport and processing"): streaming, idempotent, atomic per chunk.

1. Refuse a file over ``files_max_bytes``; hash it and check that it is UTF-8 (one streaming pass).
2. Check the header (layout and version known, receiver = the plan, sender = the folder's or the CLI's
   party and allowed to send the layout). A bad header or encoding rejects the file whole: nothing is
   applied, the error report says why.
3. Look the file up in the ledger by (sender, sha256): a file already imported changes nothing (it is
   reported as a duplicate); one interrupted resumes after its last committed line.
4. Read the records one by one; rows are applied in chunks of ``files_chunk_rows``, each chunk one
   transaction that also records the chunk's errors and advances the ledger position. Every detail record
   is parsed against the layout (a malformed one is an error of its row), lazily: while reading, only its
   control-total columns are parsed (the trailer check needs them); a handler that remembers what it
   applied (``KnownRows.known``) first names the records it has already applied exactly as they are (the
   re-import fast path: one query per block of ``KNOWN_BLOCK_CHUNKS`` chunks, in a read snapshot; a block
   known whole takes no write transaction, any other is applied chunk by chunk, each chunk checking again in
   its own), which are unchanged without being parsed, and only
   the others are parsed and applied. If a workflow rule refuses a row while its chunk is written (a
   hook's 422), the chunk is rolled back and redone one row per transaction, so the refused row is
   reported and every other row still applies. Python's cyclic collector is paused while a chunk is
   applied (``gateway.runtime.collector_paused``).
5. At the end, the trailer is checked (detail count and control totals) and the file marked done; the
   error report (layout ``error-report``) is written from the recorded errors, for the sender.

Rows are applied by a ``RowHandler`` per layout (``adapters/files/handlers.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection

from adapters.files import ledger
from adapters.files.ledger import Counts, InboundFile
from adapters.files.reader import Prescan, prescan, records
from adapters.files.writer import AtomicFile
from gateway import runtime
from gateway.calaim.policy import Policy
from gateway.calaim.resources import conn_of
from gateway.errors import FhirError
from gateway.fhir.context import Context
from gateway.store.database import write_transaction
from gateway.store.repository import WriteConflict, translate_db_errors
from mappings.files.layout import (
    DETAIL,
    HEADER,
    TRAILER,
    FieldError,
    Header,
    Layout,
    Totals,
    Value,
    format_detail,
    format_header,
    format_trailer,
    layout,
    layouts,
    parse_detail,
    parse_header,
    parse_trailer,
)

log = logging.getLogger("adapters.files")

REPORT_LAYOUT = "error-report"
CHUNK_ATTEMPTS = 4
KNOWN_BLOCK_CHUNKS = 4
"""Records read ahead, in chunks: a block of this many chunks of records read as they are is first looked up
whole (``KnownRows.known``, one query); known unchanged whole, it takes no transaction, else it is applied
chunk by chunk as usual. A re-sent file then costs one look-up per block, while a chunk of changed rows
stays ``files_chunk_rows`` long (it holds the store's writer while it is written)."""


@dataclass(slots=True)
class Row:
    """One record after the header: its line, typed values (detail records) and problems. Not changed once
    made (not frozen: a frozen dataclass costs 2 µs more per record, a tenth of a re-imported row's time)."""

    line: int
    values: dict[str, Value]
    errors: tuple[FieldError, ...] = ()
    fields: tuple[str, ...] = ()
    """The record's fields as read (after the record type)."""
    parsed: bool = True
    """False while ``values`` and ``errors`` are not filled in yet (``parse_row`` fills them)."""


def parse_row(spec: Layout, row: Row) -> Row:
    """``row`` with its values and problems (the row itself when it is parsed already)."""
    if row.parsed:
        return row
    values, errors = parse_detail(spec, list(row.fields), row.line)
    return Row(row.line, values, tuple(errors), row.fields)


APPLIED, UNCHANGED = "applied", "unchanged"
BUSY = "busy"
Outcome = str | list[FieldError]
"""``applied``, ``unchanged``, or the row's problems (nothing of the row was written)."""


class RowHandler(Protocol):
    """Applies the good rows of one layout inside the caller's transaction."""

    layout: Layout

    def sender_problem(self, sender: str) -> str | None:
        """Why ``sender`` may not send this layout (None: it may)."""

    def apply(self, ctx: Context, rows: list[Row]) -> list[Outcome]:
        """Apply ``rows`` in ``ctx``'s transaction; one outcome per row. Raises FhirError when a write is
        refused (the caller rolls back and retries the rows one by one)."""


class KnownRows(Protocol):
    """A ``RowHandler`` that remembers the records it applied (optional)."""

    def known(self, conn: Connection, rows: list[Row]) -> set[int]:
        """The lines of ``rows`` (not parsed yet: line and fields only) that were applied before exactly as
        they are and whose result is still current: unchanged, nothing to parse or write (read on
        ``conn``: a read snapshot, or the chunk's write transaction)."""


HandlerFactory = Callable[[Policy, str], RowHandler]


@dataclass
class ImportResult:
    """What an import did."""

    name: str
    sender: str
    layout: str
    status: str
    """``done``, ``duplicate`` (the same file was imported before: nothing changed), ``rejected``, or ``busy``
    (another process is importing the same file and goes on with it)."""
    counts: Counts = field(default_factory=Counts)
    errors: int = 0
    report: Path | None = None
    reason: str | None = None
    file_id: int | None = None

    def summary(self) -> str:
        """One line for people (no PHI: counts and codes)."""
        c = self.counts
        text = (
            f"{self.name}: {self.status}; rows read {c.read}, applied {c.applied}, unchanged {c.unchanged}, "
            f"rejected {c.rejected}; {self.errors} problem(s)"
        )
        if self.reason:
            text += f"; {self.reason}"
        return text


@dataclass
class _Progress:
    """Where an import is: the ledger's position, and the rows read after it that wrote nothing."""

    committed: int
    read: int
    pending: Counts = field(default_factory=Counts)

    def moved(self, position: int) -> None:
        """The ledger moved to ``position`` (the pending rows with it)."""
        self.committed = self.read = position
        self.pending = Counts()

    def defer(self, position: int, counts: Counts) -> None:
        """Rows up to ``position`` wrote nothing: counted with the next move."""
        self.read = position
        self.pending = self.pending + counts


class ConcurrentImport(Exception):
    """Another process moved the file's position: this import stops (the other one goes on)."""


@dataclass
class Importer:
    """Imports inbound files into the store of ``ctx`` with the plan's ``policy``."""

    ctx: Context
    policy: Policy
    handlers: dict[str, HandlerFactory]
    chunk_rows: int = 1000
    max_bytes: int = 1024 * 1024 * 1024

    def run(
        self,
        path: Path,
        *,
        sender: str | None = None,
        name: str | None = None,
        report_dir: Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import ``path`` (``sender``: the party it came from, None to take the header's word; ``name``: the
        name it was received under). The error report, when there are errors, goes to ``report_dir``."""
        name = name or path.name
        size = path.stat().st_size
        party = sender or "unknown"
        if size > self.max_bytes:
            reason = f"the file has {size} bytes, more than the {self.max_bytes} accepted"
            return self.refuse(name, party, reason, report_dir)
        scan = prescan(path)
        if scan.bad_encoding_line is not None:
            reason = "the file is not UTF-8 text: rejected whole"
            return self._reject(
                path, name, party, "", scan, [FieldError(scan.bad_encoding_line, "", "encoding", reason)], report_dir
            )
        first = next(records(path), None)
        header: Header | None = None
        problem: FieldError | None = None
        try:
            if first is None:
                raise ValueError("the file is empty")
            header = parse_header(first[1])
        except ValueError as exc:
            problem = FieldError(first[0] if first else 1, "", "header", f"{exc}: rejected whole")
        if header is not None:
            party = sender or header.sender
            problem = self._header_problem(header, sender, first[0] if first else 1)
        if problem is not None or header is None:
            assert problem is not None
            return self._reject(path, name, party, header.layout if header else "", scan, [problem], report_dir)
        handler = self.handlers[header.layout](self.policy, party)
        entry = ledger.open_inbound(
            self.ctx.repo.engine,
            sender=party,
            layout=header.layout,
            name=name,
            sha256=scan.sha256,
            size=scan.size,
            sequence=header.sequence,
            status=ledger.IMPORTING,
        )
        if entry.status == ledger.DONE:
            log.info("file %d (%s) was imported before: nothing to do", entry.id, header.layout)
            return self._result(entry, "duplicate", name)
        if entry.status == ledger.REJECTED:
            return self._result(entry, ledger.REJECTED, name, report_dir)
        try:
            self._read(path, entry, handler, progress)
        except ConcurrentImport:
            log.warning("file %d is being imported by another process: left to it", entry.id)
            result = self._result(ledger.reload(self.ctx.repo.engine, entry.id), BUSY, name)
            result.reason = "another process is importing this file"
            return result
        return self._result(ledger.reload(self.ctx.repo.engine, entry.id), ledger.DONE, name, report_dir)

    # --- header ---------------------------------------------------------------------------------

    def _header_problem(self, header: Header, sender: str | None, line: int) -> FieldError | None:
        known = layouts().get(header.layout)
        reason = ""
        if known is None or header.layout not in self.handlers:
            reason = f"layout {header.layout} is not one the plan accepts ({', '.join(sorted(self.handlers))})"
        elif header.version != known.version:
            reason = f"layout {header.layout} version {header.version} is not supported (version {known.version})"
        elif header.receiver != self.policy.plan_organization:
            reason = f"the file is addressed to {header.receiver}, not to the plan ({self.policy.plan_organization})"
        elif sender is not None and header.sender != sender:
            reason = f"the header names sender {header.sender} but the file came from {sender}"
        else:
            reason = self.handlers[header.layout](self.policy, header.sender).sender_problem(header.sender) or ""
        return FieldError(line, "", "header", f"{reason}: rejected whole") if reason else None

    # --- rows ----------------------------------------------------------------------------------

    def _read(
        self, path: Path, entry: InboundFile, handler: RowHandler, progress: Callable[[int], None] | None
    ) -> None:
        position = entry.position
        done = _Progress(position, position)
        totals = Totals(handler.layout)
        width = len(handler.layout.columns) + 1
        trailer_line: int | None = None
        trailer_problems: list[FieldError] = []
        chunk: list[Row] = []
        block_rows = self.chunk_rows * KNOWN_BLOCK_CHUNKS  # rows read as they are (parsed=False) only
        stream = records(path)
        next(stream, None)  # the header, checked before
        for line, fields in stream:
            if progress is not None:
                progress(line)
            kind = fields[0]
            if kind == DETAIL and len(fields) == width and trailer_line is None:
                # The common case, inline (the re-import's rate is this loop's): counted, not parsed yet.
                detail = fields[1:]
                totals.add_fields(detail)
                if line > position:
                    chunk.append(Row(line, {}, (), tuple(detail), parsed=False))
                    if len(chunk) >= block_rows:
                        self._commit_block(entry.id, done, chunk, handler)
                        chunk = []
                continue
            if line <= position and kind != DETAIL:
                continue
            row: Row | None = None
            if kind == DETAIL:
                row = self._detail(totals, line, fields, trailer_line is not None)
            elif kind == TRAILER and trailer_line is None:
                trailer_line = line
                try:
                    trailer_problems = totals.check(parse_trailer(handler.layout, fields), line)
                except ValueError as exc:
                    trailer_problems = [FieldError(line, "", "trailer", str(exc))]
            else:
                what = {HEADER: "a second header", TRAILER: "a second trailer"}.get(kind, "an unknown record type")
                row = Row(line, {}, (FieldError(line, "", "record", f"{what} (records are HDR, DTL, TRL)"),))
            if row is None or line <= position:
                continue
            chunk.append(row)
            if len(chunk) >= self.chunk_rows:
                self._commit_block(entry.id, done, chunk, handler)
                chunk = []
        if chunk:
            self._commit_block(entry.id, done, chunk, handler)
        if trailer_line is None:
            trailer_problems = [
                FieldError(done.read + 1, "", "trailer", "the file has no trailer (TRL): it may be cut short")
            ]
        # The ledger alone: a plain write transaction (a WriteTransaction would compile the store's write
        # statements in a process that wrote nothing else, e.g. one re-importing a file unchanged).
        with translate_db_errors(), write_transaction(self.ctx.repo.engine) as conn:
            if done.read > done.committed:
                self._advance(conn, entry.id, done, done.read, Counts())
            ledger.add_errors(conn, entry.id, trailer_problems)
            ledger.finish(conn, entry.id, ledger.DONE)

    @staticmethod
    def _detail(totals: Totals, line: int, fields: list[str], after: bool) -> Row:
        """A detail record as read: parsed later, in its chunk (module docstring), unless it is an error
        already (wrong column count, ``after`` the trailer); its control totals are counted now."""
        spec, detail, after_trailer = totals.layout, fields[1:], after
        if len(detail) == len(spec.columns) and not after_trailer:
            totals.add_fields(detail)
            return Row(line, {}, (), tuple(detail), parsed=False)
        values, errors = parse_detail(spec, detail, line)
        totals.add(values)
        if after_trailer:
            errors = [FieldError(line, "", "record", "a detail record after the trailer")]
        return Row(line, values, tuple(errors), tuple(detail))

    def _commit_block(self, file_id: int, done: _Progress, rows: list[Row], handler: RowHandler) -> None:
        """``rows`` (up to ``KNOWN_BLOCK_CHUNKS`` chunks): deferred whole when all are known unchanged (one
        look-up), else applied chunk by chunk (``_commit``)."""
        if len(rows) > self.chunk_rows and self._all_known(rows, handler):
            done.defer(rows[-1].line, Counts(read=len(rows), unchanged=len(rows)))
            return
        for start in range(0, len(rows), self.chunk_rows):
            self._commit(file_id, done, rows[start : start + self.chunk_rows], handler)

    def _commit(self, file_id: int, done: _Progress, chunk: list[Row], handler: RowHandler) -> None:
        """Apply a chunk in one transaction with its ledger move; row by row if a write is refused. A chunk
        whose rows are all known unchanged writes nothing, not even the ledger move: it is counted with the
        next chunk that writes, or at the end (a crash before then reads those rows again, unchanged)."""
        with runtime.collector_paused():  # the chunk's objects live until it commits
            self._commit_chunk(file_id, done, chunk, handler)

    def _commit_chunk(self, file_id: int, done: _Progress, chunk: list[Row], handler: RowHandler) -> None:
        last = chunk[-1].line
        if self._all_known(chunk, handler):
            done.defer(last, Counts(read=len(chunk), unchanged=len(chunk)))
            return
        for _ in range(CHUNK_ATTEMPTS):
            try:
                with self.ctx.repo.write() as tx:
                    counts, errors, wrote = self._apply(self.ctx.in_transaction(tx), chunk, handler)
                    if wrote:
                        tx.flush()
                        ledger.add_errors(tx.conn, file_id, errors)
                        self._advance(tx.conn, file_id, done, last, counts)
                if wrote:
                    done.moved(last)
                else:
                    done.defer(last, counts)
                return
            except WriteConflict:
                continue  # a concurrent writer won a uniqueness race: the rerun sees its commit
            except FhirError:
                break
        for row in chunk:
            self._commit_one(file_id, done, row, handler)

    def _all_known(self, chunk: list[Row], handler: RowHandler) -> bool:
        """Whether every row of ``chunk`` is known unchanged (``KnownRows``), read in a snapshot: a re-sent
        chunk then takes no write transaction at all. Otherwise the chunk's write transaction checks again
        (what it writes follows from what it reads there)."""
        known = getattr(handler, "known", None)
        if not callable(known) or not all(not row.parsed for row in chunk):
            return False
        with self.ctx.repo.connect() as conn:
            return len(known(conn, chunk)) == len(chunk)

    def _commit_one(self, file_id: int, done: _Progress, row: Row, handler: RowHandler) -> None:
        try:
            with self.ctx.repo.write() as tx:
                counts, errors, _ = self._apply(self.ctx.in_transaction(tx), [row], handler)
                tx.flush()
                ledger.add_errors(tx.conn, file_id, errors)
                self._advance(tx.conn, file_id, done, row.line, counts)
        except (FhirError, WriteConflict) as exc:
            problem = FieldError(row.line, "", "business-rule", refusal_reason(exc))
            with self.ctx.repo.write() as tx:
                ledger.add_errors(tx.conn, file_id, [problem])
                self._advance(tx.conn, file_id, done, row.line, Counts(read=1, rejected=1))
        done.moved(row.line)

    @staticmethod
    def _advance(conn: Connection, file_id: int, done: _Progress, position: int, counts: Counts) -> None:
        """Move the ledger from the last committed position to ``position`` with ``counts`` and the rows
        deferred since (``done`` changes only once the caller's transaction commits)."""
        try:
            ledger.advance(conn, file_id, expected=done.committed, position=position, counts=done.pending + counts)
        except FhirError as exc:
            raise ConcurrentImport(str(exc)) from None

    @staticmethod
    def _apply(ctx: Context, chunk: list[Row], handler: RowHandler) -> tuple[Counts, list[FieldError], bool]:
        """Apply ``chunk``: its counts, its problems, and whether anything may have been written (False
        when every row was known unchanged: nothing parsed, nothing written)."""
        lazy = [row for row in chunk if not row.parsed]
        known = getattr(handler, "known", None)  # KnownRows, when the handler is one
        same: set[int] = known(conn_of(ctx), lazy) if callable(known) and lazy else set()
        rows = [parse_row(handler.layout, row) for row in chunk if row.line not in same]
        good = [row for row in rows if not row.errors]
        outcomes = handler.apply(ctx, good) if good else []
        errors = [e for row in rows for e in row.errors]
        rejected = len(rows) - len(good)
        applied, unchanged = 0, len(same)
        wrote = len(same) < len(chunk)
        for outcome in outcomes:
            if outcome == APPLIED:
                applied += 1
            elif outcome == UNCHANGED:
                unchanged += 1
            elif isinstance(outcome, list):
                rejected += 1
                errors.extend(outcome)
        return Counts(len(chunk), applied, unchanged, rejected), errors, wrote

    # --- results and reports ---------------------------------------------------------------------

    def _reject(
        self,
        path: Path,
        name: str,
        sender: str,
        layout_id: str,
        scan: Prescan,
        problems: list[FieldError],
        report_dir: Path | None,
    ) -> ImportResult:
        """Record a file rejected whole (by digest, so the same bytes are refused again the same way)."""
        sha, size = scan.sha256, scan.size
        entry = ledger.open_inbound(
            self.ctx.repo.engine,
            sender=sender,
            layout=layout_id or "unknown",
            name=name,
            sha256=sha,
            size=size,
            sequence=None,
            status=ledger.REJECTED,
        )
        if entry.status == ledger.REJECTED and ledger.error_count(self.ctx.repo.engine, entry.id) == 0:
            with self.ctx.repo.write() as tx:
                ledger.add_errors(tx.conn, entry.id, problems)
                ledger.finish(tx.conn, entry.id, ledger.REJECTED)
        log.warning("file %d rejected whole: %s", entry.id, problems[0].code)
        result = self._result(entry, ledger.REJECTED, name, report_dir)
        result.reason = problems[0].reason
        return result

    def refuse(self, name: str, sender: str, reason: str, report_dir: Path | None) -> ImportResult:
        """A file refused without reading it (too large, a link, a bad name): not in the ledger, a report only."""
        problem = FieldError(0, "", "header", f"{reason}: rejected whole")
        report = self._write_report(name, sender, [problem], report_dir) if report_dir else None
        log.warning("file refused before reading")
        return ImportResult(name, sender, "", ledger.REJECTED, Counts(), 1, report, problem.reason)

    def _result(self, entry: InboundFile, status: str, name: str, report_dir: Path | None = None) -> ImportResult:
        engine = self.ctx.repo.engine
        errors = ledger.error_count(engine, entry.id)
        report = None
        if errors and report_dir is not None and status != "duplicate":
            report = self._write_report(name, entry.sender, ledger.errors_of(engine, entry.id), report_dir)
        counts = entry.counts
        if status == "duplicate":
            counts = Counts(read=entry.counts.read, unchanged=entry.counts.read)
        log.info(
            "file %d (%s) %s: read %d applied %d unchanged %d rejected %d problems %d",
            entry.id,
            entry.layout,
            status,
            counts.read,
            counts.applied,
            counts.unchanged,
            counts.rejected,
            errors,
        )
        return ImportResult(name, entry.sender, entry.layout, status, counts, errors, report, None, entry.id)

    def _write_report(self, name: str, sender: str, problems: Iterable[FieldError], report_dir: Path) -> Path:
        return write_report(self.policy.plan_organization, name, sender, problems, report_dir)


def write_report(plan: str, name: str, sender: str, problems: Iterable[FieldError], report_dir: Path) -> Path:
    """Write the error report (layout ``error-report``) of file ``name`` into ``report_dir``; its path."""
    report_layout = layout(REPORT_LAYOUT)
    target = report_dir / f"{name}.errors.txt"
    header = Header(REPORT_LAYOUT, report_layout.version, plan, sender, date.today(), 1)
    with AtomicFile(target) as out:
        out.write(format_header(header))
        count = 0
        for problem in problems:
            values: dict[str, Value] = {
                "SOURCE_FILE": name,
                "ROW": problem.row,
                "COLUMN": problem.column or None,
                "CODE": problem.code,
                "REASON": problem.reason,
            }
            out.write(format_detail(report_layout, values))
            count += 1
        out.write(format_trailer(count, ()))
    return target


def refusal_reason(exc: Exception) -> str:
    """A refusal in words: the diagnostics and where (FhirError), or the kind of failure."""
    if isinstance(exc, FhirError):
        parts = []
        for issue in exc.issues[:3]:
            where = f" ({', '.join(issue.expression)})" if issue.expression else ""
            parts.append(f"{issue.diagnostics}{where}")
        return "; ".join(parts) or exc.message
    return "a concurrent write kept conflicting; the row was not applied"
