"""One inbound message → its acknowledgement(s): decode, check, parse, map, apply, log (docs/hl7v2.md).

Two steps, so that the CPU work of many connections overlaps and commits can be grouped:

1. ``prepare(raw)`` (no database, ``adapters.hl7v2.prepare``): read the MSH from the bytes, decode with
   MSH-18, check version, processing id and message type (AR), parse with hl7apy, check the profile and
   map to a Bundle (AE). The listener runs it in parse worker processes (``adapters.hl7v2.parsepool``).
2. ``commit(batch)``: one write transaction for the batch. Per message: look up its key (sender, MSH-10)
   in the message log; an applied one (AA) is a resend: its stored ACK is answered, nothing changes.
   Otherwise the Bundle is applied inside a savepoint together with the log row (status AA and the
   ACK): the row and the resources commit together or not at all. A FHIR refusal rolls the savepoint
   back and logs the message with its AE; the other messages of the batch are not affected. The
   referrals of new members are written as a group instead (``adapters.hl7v2.batch``: the same rows, set
   based, one savepoint per run of such messages, none when the whole group is one run; a run that meets a
   surprise is rolled back and applied message by message).

ACKs are built before the commit and sent only after it (DESIGN.md choice 5): a crash before the commit
leaves neither resources nor log row, so the sender's resend is applied once; a crash after it leaves
the row, so the resend gets the stored ACK.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from adapters.hl7v2 import batch as batch_writes
from adapters.hl7v2 import messagelog
from adapters.hl7v2.apply import EntryFailed, apply_bundle
from adapters.hl7v2.prepare import DEFAULT_CHARSET, Prepared, Preparer
from adapters.hl7v2.transitional import add_transitional_care
from gateway.calaim.policy import Policy
from gateway.errors import FhirError, ServiceUnavailable, frames
from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.store.repository import WriteConflict, WriteTransaction
from mappings.hl7v2.ack import ACCEPT_CODES, build_ack, wants
from mappings.hl7v2.bundle import Mapped
from mappings.hl7v2.er7 import Header
from mappings.hl7v2.errors import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY,
    INTERNAL_ERROR,
    RECORD_LOCKED,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    Problem,
    V2Error,
)
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.tables import CHARSETS

log = logging.getLogger("adapters.hl7v2")

ATTEMPTS_PER_MESSAGE = 3
"""Savepoint reruns of a message that lost a uniqueness race to a concurrent writer."""


@dataclass
class Outcome:
    """What was decided for one message: the application ACK code and text, stored or fresh."""

    code: str  # AA | AE | AR
    ack: bytes  # the application ACK (encoded in the message's charset)
    stored: bool = True  # False: the database could not record it (transient): the sender should resend
    duplicate: bool = False
    resources: list[str] = field(default_factory=list)


class _Redo(Exception):
    """A group written without savepoints met a surprise: its transaction is rolled back and the group
    written again with them (``InboundProcessor.commit``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InboundProcessor:
    """Turns raw inbound messages into committed resources and ACK bytes (module docstring)."""

    def __init__(self, ctx: Context, settings: Settings, policy: Policy, config: MappingConfig) -> None:
        self.ctx = ctx
        self.settings = settings
        self.policy = policy
        self.config = config
        self.grouped = True
        """Write the referrals of new members of a group as a group (``adapters.hl7v2.batch``); False: the
        per-message path for every message (the reference the grouped path is tested against)."""
        self._stamp: tuple[int, str] = (-1, "")
        """The second ``timestamp`` last formatted, and its text."""
        self.preparer = Preparer(
            settings.hl7v2_processing_id, settings.mllp_max_message_bytes, config, validate_models=True, policy=policy
        )

    # --- step 1: no database ------------------------------------------------------------------------

    def prepare(self, raw: bytes, *, too_large: int | None = None, limit: int | None = None) -> Prepared:
        """Step 1 in this thread (``Preparer.prepare``); the listener runs it in its parse workers."""
        return self.preparer.prepare(raw, too_large=too_large, limit=limit)

    # --- step 2: one transaction per batch ---------------------------------------------------------

    def commit(self, batch: list[Prepared]) -> list[Outcome]:
        """Apply and log ``batch`` in one transaction; outcomes in batch order. The referrals of new
        members are written as a group (``adapters.hl7v2.batch``) unless ``grouped`` is off; every other
        message, and a group that cannot be written as one, message by message.

        A group whose every message the screen keeps (the common case) is written first without any
        savepoint (``_whole``): on SQLite each page first changed inside a savepoint is copied to its
        sub-journal, about a third of the commit thread's CPU for a small group. If that write meets a
        surprise, its transaction is rolled back whole and the group is written again as before, a
        savepoint per run and per message, so the outcomes are those of that path."""
        try:
            if not self.grouped or not batch_writes.enabled(self.ctx):
                with self.ctx.repo.write() as tx:
                    return [self._one(tx, prepared) for prepared in batch]
            try:
                with self.ctx.repo.write() as tx:
                    return self._grouped(tx, batch, whole=True)
            except _Redo as redo:
                log.info("hl7v2: a group of %d written again, a savepoint per run (%s)", len(batch), redo.reason)
            with self.ctx.repo.write() as tx:
                return self._grouped(tx, batch)
        except (ServiceUnavailable, SQLAlchemyError, WriteConflict) as exc:
            log.warning(
                "hl7v2: batch of %d not committed (%s); answering AR, the sender resends",
                len(batch),
                type(exc).__name__,
            )
            return [self.transient(p) for p in batch]

    def _grouped(self, tx: WriteTransaction, batch: list[Prepared], *, whole: bool = False) -> list[Outcome]:
        """Runs of consecutive messages ``batch_writes`` plans are written together (one savepoint per
        run); the others one by one, in their place. ``whole``: a group that is one run is written without
        a savepoint (``_whole``; ``_Redo`` when it cannot be)."""
        plans = batch_writes.plans_for(batch, self.policy, tx)
        if whole and all(plan is not None for plan in plans):
            return self._whole(tx, [plan for plan in plans if plan is not None])
        outcomes: list[Outcome] = []
        run: list[batch_writes.Plan] = []
        for prepared, plan in zip(batch, plans, strict=True):
            if plan is not None:
                run.append(plan)
                continue
            outcomes += self._run(tx, run)
            run = []
            outcomes.append(self._one(tx, prepared))
        return outcomes + self._run(tx, run)

    def _run(self, tx: WriteTransaction, run: list[batch_writes.Plan]) -> list[Outcome]:
        """One run as a group; message by message when the group cannot be written (module ``batch``)."""
        if not run:
            return []
        savepoint = tx.conn.begin_nested()
        try:
            written = batch_writes.write(self.ctx, self.policy, tx, run, lambda header: self._ack(header, "AA", []))
        except (batch_writes.Fallback, WriteConflict, IntegrityError, FhirError) as exc:
            savepoint.rollback()
            log.info("hl7v2: a run of %d applied message by message (%s)", len(run), type(exc).__name__)
            return [self._one(tx, plan.prepared) for plan in run]
        except (ServiceUnavailable, SQLAlchemyError):
            raise
        except Exception as exc:  # a bug must not take the messages down: the per-message path answers them
            savepoint.rollback()
            log.error("hl7v2: unexpected %s writing a run: %s", type(exc).__name__, frames(exc))
            return [self._one(tx, plan.prepared) for plan in run]
        savepoint.commit()
        return [Outcome("AA", ack, resources=resources) for ack, resources in written]

    def _whole(self, tx: WriteTransaction, run: list[batch_writes.Plan]) -> list[Outcome]:
        """The whole group as one run, without a savepoint (``commit``): ``_Redo`` when it cannot be written
        so (what ``_run`` would answer message by message after rolling its savepoint back); the caller's
        transaction is then rolled back whole."""
        try:
            written = batch_writes.write(self.ctx, self.policy, tx, run, lambda header: self._ack(header, "AA", []))
        except (batch_writes.Fallback, WriteConflict, IntegrityError, FhirError) as exc:
            raise _Redo(type(exc).__name__) from None
        except (ServiceUnavailable, SQLAlchemyError):
            raise
        except Exception as exc:  # a bug must not take the messages down: the path with savepoints answers them
            log.error("hl7v2: unexpected %s writing a group: %s", type(exc).__name__, frames(exc))
            raise _Redo(type(exc).__name__) from None
        return [Outcome("AA", ack, resources=resources) for ack, resources in written]

    def process(self, raw: bytes) -> list[bytes]:
        """Both steps for one message; the ACK messages to send (for tools and tests)."""
        prepared = self.prepare(raw)
        return self.acks(prepared, self.commit([prepared])[0])

    def _one(self, tx: WriteTransaction, prepared: Prepared) -> Outcome:
        key = prepared.key
        if key is None:
            return self._record_failure(tx, prepared)
        for _ in range(ATTEMPTS_PER_MESSAGE):
            existing = messagelog.find(tx.conn, messagelog.IN, *key, lock=True)
            if existing is not None and existing.status == messagelog.FINAL_INBOUND and existing.ack is not None:
                messagelog.update_row(tx.conn, existing.id)
                log.info("hl7v2: resend of message log %d answered with its stored ACK", existing.id)
                return Outcome("AA", existing.ack, duplicate=True, resources=existing.resources)
            if prepared.error is not None or prepared.mapped is None:
                return self._record_failure(tx, prepared, existing)
            savepoint = tx.conn.begin_nested()
            try:
                outcome = self._apply(tx, prepared, prepared.mapped, existing)
            except (WriteConflict, IntegrityError):
                savepoint.rollback()  # a concurrent writer holds a key we need: look again, then rerun
                continue
            except V2Error as error:
                savepoint.rollback()
                prepared.error = error
                return self._record_failure(tx, prepared, existing)
            except Exception as exc:  # a bug must not take the other messages of the batch down
                savepoint.rollback()
                log.error("hl7v2: unexpected %s applying a message: %s", type(exc).__name__, frames(exc))
                prepared.error = V2Error("AE", [Problem(INTERNAL_ERROR, "the gateway could not apply the message")])
                return self._record_failure(tx, prepared, existing)
            savepoint.commit()
            return outcome
        prepared.error = V2Error("AE", [Problem(RECORD_LOCKED, "concurrent changes to the same records; resend later")])
        return self._record_failure(tx, prepared)

    def _apply(
        self, tx: WriteTransaction, prepared: Prepared, mapped: Mapped, existing: messagelog.LogRow | None
    ) -> Outcome:
        inner = WriteTransaction(tx.conn, indexer=self.ctx.repo.indexer, lock_rows=not self.ctx.repo.sqlite)
        inner_ctx = self.ctx.in_transaction(inner)
        try:
            applied = apply_bundle(inner_ctx, mapped.bundle, model_ok=prepared.model_ok)
            resources = list(applied.resources)
            if mapped.transitional_care:
                task = add_transitional_care(inner_ctx, self.policy, self.config, mapped, applied)
                if task:
                    resources.append(task)
        except EntryFailed as failed:
            raise self._content_error(mapped, failed) from None
        inner.flush()
        header = prepared.header
        assert header is not None
        ack = self._ack(header, "AA", [])
        values: dict[str, Any] = {
            "status": "AA",
            "ack": ack,
            "error": None,
            "resources": resources,
            "raw": prepared.raw,
        }
        if existing is None:
            messagelog.insert_row(
                tx.conn,
                direction=messagelog.IN,
                sender=header.sender,
                control_id=header.control_id,
                message_type=prepared.message_type,
                charset=header.charset,
                **values,
            )
        else:
            messagelog.update_row(tx.conn, existing.id, **values)
        return Outcome("AA", ack, resources=resources)

    def _content_error(self, mapped: Mapped, failed: EntryFailed) -> V2Error:
        """A FHIR refusal as AE: each issue at the v2 field its element was mapped from (``Mapped.sources``)."""
        error = failed.error
        entry_location = mapped.entry_sources.get(failed.full_url)
        problems: list[Problem] = []
        for issue in error.issues or []:
            location = None
            for expression in issue.expression:
                location = mapped.source_of(expression)
                if location is not None:
                    break
            code = DUPLICATE_KEY if error.status in (409, 412) else INTERNAL_ERROR
            if error.status == 422 and issue.code in ("code-invalid", "required", "value", "structure", "invariant"):
                code = TABLE_VALUE_NOT_FOUND if issue.code == "code-invalid" else REQUIRED_FIELD_MISSING
                if issue.code in ("value", "structure", "invariant"):
                    code = DATA_TYPE_ERROR
            text = f"{failed.resource_type} refused ({error.status}): {issue.diagnostics}"[:250]
            problems.append(Problem(code, text, location or entry_location))
        if not problems:
            problems.append(Problem(INTERNAL_ERROR, f"{failed.resource_type} refused ({error.status})", entry_location))
        return V2Error("AE", problems)

    def _record_failure(
        self, tx: WriteTransaction, prepared: Prepared, existing: messagelog.LogRow | None = None
    ) -> Outcome:
        error = prepared.error or V2Error("AR", [Problem(INTERNAL_ERROR, "the message could not be read")])
        ack = self._ack(prepared.header, error.ack_code, error.problems)
        header = prepared.header
        values: dict[str, Any] = {
            "status": error.ack_code,
            "ack": ack,
            "error": error.summary[:200],
            "raw": prepared.raw,
        }
        key = prepared.key
        if existing is None and key is not None:
            existing = messagelog.find(tx.conn, messagelog.IN, *key, lock=True)
        if existing is not None:
            messagelog.update_row(tx.conn, existing.id, resources=[], **values)
        else:
            with tx.conn.begin_nested():
                messagelog.insert_row(
                    tx.conn,
                    direction=messagelog.IN,
                    sender=header.sender if header else "",
                    control_id=header.control_id or None if header else None,
                    message_type=prepared.message_type,
                    charset=header.charset if header else None,
                    **values,
                )
        log.info("hl7v2: message answered %s", error.summary)
        return Outcome(error.ack_code, ack)

    def transient(self, prepared: Prepared) -> Outcome:
        problems = [Problem(INTERNAL_ERROR, "the gateway is busy and stored nothing; resend the message")]
        return Outcome("AR", self._ack(prepared.header, "AR", problems), stored=False)

    # --- acknowledgements --------------------------------------------------------------------------

    def _ack(self, header: Header | None, code: str, problems: list[Problem]) -> bytes:
        text = build_ack(
            header,
            code=code,
            control_id=new_control_id(),
            timestamp=self.timestamp(),
            problems=problems,
            default_processing_id=self.settings.hl7v2_processing_id,
        )
        return encode(text, header)

    def acks(self, prepared: Prepared, outcome: Outcome) -> list[bytes]:
        """The ACK messages to send: the application ACK (original mode), or in enhanced mode the accept
        ACK and the application ACK each under its MSH-15/16 condition."""
        header = prepared.header
        if header is None or not header.enhanced:
            return [outcome.ack]
        out: list[bytes] = []
        accept = ACCEPT_CODES[outcome.code] if outcome.stored else "CE"
        if wants(header.accept_ack_type, accept):
            out.append(
                encode(build_ack(header, code=accept, control_id=new_control_id(), timestamp=self.timestamp()), header)
            )
        if outcome.stored and wants(header.application_ack_type, outcome.code):
            out.append(outcome.ack)
        return out

    def timestamp(self) -> str:
        """Now as a DTM with offset, in the plan's zone (to the second, as MSH-7 of an ACK is written). The
        text is kept for the second it names: every ACK of a group, and of the groups of that second, has the
        same one, and formatting it in the zone cost about a third of building an ACK."""
        second = int(time.time())
        kept = self._stamp
        if kept[0] != second:
            kept = (second, datetime.fromtimestamp(second, self.config.zone).strftime("%Y%m%d%H%M%S%z"))
            self._stamp = kept  # one tuple: the commit thread and the event loop both read it
        return kept[1]


def new_control_id() -> str:
    """MSH-10 of an ACK the gateway sends (unique, 20 characters)."""
    return uuid.uuid4().hex[:20].upper()


def encode(text: str, header: Header | None) -> bytes:
    """An ACK in the character set of the message it answers (characters it lacks become '?')."""
    charset = CHARSETS.get(header.charset if header and header.charset else DEFAULT_CHARSET, "utf-8")
    return text.encode(charset, errors="replace")
