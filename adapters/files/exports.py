"""Outbound files (issue 6): the daily authorization reconciliation file per HN, the monthly POF eligibility
list and the weekly ECM activity log, written durably (``AtomicFile``) into the recipient's outbox folder.

Reconciliation is driven by the outbox queue ``calaim.authorization>files``: events are claimed, grouped by
the member's HN, recorded in the ledger with the file that will carry them (its sequence number) in one
transaction, the file is written (temp name, fsync, rename), then the events are marked delivered. A crash
after the record rewrites the recorded file (same sequence, same events) on the next run; a crash after
the write only marks the events delivered: a change is never in two files, and never in none. Changes of
authorizations the HN owns (responsible party ``hn``, from the HN's own file) are not sent back to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, update

from adapters.files import ledger
from adapters.files.hn_authorizations import npi_of
from adapters.files.lookup import by_id, by_reference
from adapters.files.writer import AtomicFile
from gateway.calaim import events
from gateway.calaim.authorizations import Authorization
from gateway.calaim.config import organization_types
from gateway.calaim.policy import Policy
from gateway.calaim.resources import add_months, iter_search, ref_id
from gateway.fhir.context import Context
from gateway.fhir.core import dispatch
from gateway.fhir.request import FhirRequest
from gateway.store.outbox import OutboxEvent, claim, default_worker_id, release
from gateway.store.schema import outbox
from mappings.files.authorization import reconciliation_rows
from mappings.files.layout import Header, Totals, Value, format_detail, format_header, format_trailer, layout
from mappings.files.outbound import activity_parts, activity_row, cin_of, eligibility_row
from mappings.files.vocabulary import EXT_HEALTH_NETWORK, SERVICE_SYSTEM

log = logging.getLogger("adapters.files")

RECONCILIATION = "authorization-reconciliation"
ELIGIBILITY = "pof-eligibility"
ACTIVITY = "ecm-activity-log"
KINDS = (RECONCILIATION, ELIGIBILITY, ACTIVITY)
QUEUE = events.queue(events.AUTHORIZATION, events.FILES)
CLAIM_BATCH = 1000
CLAIM_LEASE_S = 600.0


@dataclass(frozen=True, slots=True)
class Written:
    """One outbound file written."""

    kind: str
    recipient: str
    sequence: int
    path: Path
    rows: int


def file_name(kind: str, recipient: str, period: str) -> str:
    """``{kind}_{recipient}_{period}_{sequence:06d}.txt`` (a format string taking ``sequence``)."""
    return f"{kind}_{recipient}_{period.replace('-', '')}_{{sequence:06d}}.txt"


def health_networks(policy: Policy) -> list[str]:
    """The plan's health networks (Organizations typed health-network)."""
    return sorted(o for o, org in policy.organizations.items() if "health-network" in organization_types(org))


def ecm_providers(policy: Policy) -> list[str]:
    """The plan's ECM providers (Organizations typed ecm-provider)."""
    return sorted(o for o, org in policy.organizations.items() if "ecm-provider" in organization_types(org))


class Exporter:
    """Writes outbound files for the plan into ``outbox_of(recipient)`` folders."""

    def __init__(self, ctx: Context, policy: Policy, outbox_dir: Callable[[str], Path]) -> None:
        self.ctx = ctx
        self.policy = policy
        self.outbox_dir = outbox_dir
        self.engine = ctx.repo.engine
        self.worker = default_worker_id()

    def _write(
        self, kind: str, recipient: str, entry: ledger.OutboundFile, rows: Iterable[dict[str, Value]]
    ) -> Written:
        spec = layout(kind)
        path = self.outbox_dir(recipient) / entry.name
        totals = Totals(spec)
        header = Header(kind, spec.version, self.policy.plan_organization, recipient, date.today(), entry.sequence)
        with AtomicFile(path) as out:
            out.write(format_header(header))
            for row in rows:
                out.write(format_detail(spec, row))
                totals.add(row)
            trailer = totals.trailer()
            out.write(format_trailer(trailer.count, trailer.totals))
        ledger.mark_written(self.engine, entry.id, rows=totals.count, sha256=out.sha256)
        log.info("wrote %s sequence %d for %s: %d rows", kind, entry.sequence, recipient, totals.count)
        return Written(kind, recipient, entry.sequence, path, totals.count)

    def _record(
        self, kind: str, recipient: str, period: str, outbox_ids: list[int] | None = None
    ) -> ledger.OutboundFile:
        with self.ctx.repo.write() as tx:
            return ledger.record_outbound(
                tx.conn,
                kind=kind,
                recipient=recipient,
                period=period,
                name_of=file_name(kind, recipient, period),
                outbox_ids=outbox_ids,
            )

    # --- reconciliation ---------------------------------------------------------------------------

    def reconciliation(self, day: date, *, networks: list[str] | None = None) -> list[Written]:
        """One reconciliation file per HN (``networks``: those HNs only, default every HN of the plan) with
        every change not yet sent; a file recorded but not written before a crash is written first."""
        targets = networks if networks is not None else health_networks(self.policy)
        written: list[Written] = []
        for network in targets:
            written += [self._rewrite(entry) for entry in ledger.unfinished(self.engine, RECONCILIATION, network)]
        pending = self._claim(set(targets))
        period = day.isoformat()
        for network in targets:
            mine = pending.get(network, [])
            entry = self._record(RECONCILIATION, network, period, [e.id for e in mine])
            written.append(self._write(RECONCILIATION, network, entry, self._reconciliation_rows(mine)))
            self._delivered([e.id for e in mine])
        return written

    def _claim(self, networks: set[str]) -> dict[str, list[OutboxEvent]]:
        """Claim every due event of the queue: those of ``networks`` grouped by HN; events already in a
        file or not for any HN's file are marked delivered; the other HNs' events are handed back."""
        grouped: dict[str, list[OutboxEvent]] = {}
        others: list[OutboxEvent] = []
        while True:
            batch = claim(
                self.engine, topic=QUEUE, worker_id=self.worker, limit=CLAIM_BATCH, lease_seconds=CLAIM_LEASE_S
            )
            if not batch:
                break
            carried = ledger.carried(self.engine, [e.id for e in batch])
            done: list[int] = []
            for event in batch:
                network = ref_id(event.payload.get("healthNetwork"), "Organization")
                if event.id in carried or network is None or event.payload.get("responsibleParty") == "hn":
                    done.append(event.id)  # already in a file, or no HN file carries it
                elif network in networks:
                    grouped.setdefault(network, []).append(event)
                else:
                    others.append(event)
            self._delivered(done)
            if len(batch) < CLAIM_BATCH:
                break
        for event in others:
            release(self.engine, event, self.worker)
        return grouped

    def _delivered(self, outbox_ids: list[int]) -> None:
        """Mark events delivered once the file carrying them is written (or none must carry them)."""
        if not outbox_ids:
            return
        with self.ctx.repo.write() as tx:
            for start in range(0, len(outbox_ids), 900):
                part = outbox_ids[start : start + 900]
                tx.conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(part), outbox.c.delivered_at.is_(None))
                    .values(delivered_at=ledger.now_micros(), claimed_until=None)
                )

    def _rewrite(self, entry: ledger.OutboundFile) -> Written:
        """Write a file that was recorded but not written (a crash came between), from its recorded events."""
        ids = ledger.events_of(self.engine, entry.id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(outbox.c.id, outbox.c.payload).where(outbox.c.id.in_(ids)).order_by(outbox.c.id))
            payloads = [OutboxEvent(r.id, QUEUE, None, orjson.loads(r.payload), 0, 0, 0) for r in rows]
        written = self._write(entry.kind, entry.recipient, entry, self._reconciliation_rows(payloads))
        self._delivered(ids)
        return written

    def _reconciliation_rows(self, batch: list[OutboxEvent]) -> Iterator[dict[str, Value]]:
        patients = [str(ref_id(e.payload.get("patient"), "Patient")) for e in batch]
        with self.engine.connect() as conn:
            found = by_id(conn, "Patient", patients)
        for event in batch:
            payload = event.payload
            patient = found.get(str(ref_id(payload.get("patient"), "Patient")))
            yield from reconciliation_rows(
                payload,
                cin=(cin_of(patient.body) if patient else None) or "",
                provider_npi=npi_of(self.policy, ref_id(payload.get("provider"), "Organization")),
                notice_npi=npi_of(self.policy, ref_id(payload.get("noticeOfActionOwner"), "Organization")),
            )

    # --- POF eligibility list ----------------------------------------------------------------------

    def eligibility(self, recipient: str, month: date) -> Written:
        """The member information file of ``month`` for an HN (its members) or ECM provider (its members)."""
        first = month.replace(day=1)
        entry = self._record(ELIGIBILITY, recipient, f"{first:%Y-%m}")
        return self._write(ELIGIBILITY, recipient, entry, self._eligibility_rows(recipient, first))

    def _eligibility_rows(self, recipient: str, first: date) -> Iterator[dict[str, Value]]:
        last = add_months(first, 1) - timedelta(days=1)
        service = f"{SERVICE_SYSTEM}|{self.policy.plan.ecm.service}"
        with self.ctx.repo.connect() as conn:
            current: dict[str, Authorization] = {}
            for body in iter_search(self.ctx, conn, "CoverageEligibilityResponse", [("service", service)]):
                auth = Authorization.of(body)
                if not auth.certified(self.policy) or auth.start is None or auth.patient_id is None:
                    continue
                if auth.start > last or (auth.end is not None and auth.end < first):
                    continue
                best = current.get(auth.patient_id)
                if best is None or (best.start or date.min) < auth.start:
                    current[auth.patient_id] = auth
            patients = by_id(conn, "Patient", current)
            referrals = by_id(conn, "ServiceRequest", [a.referral_id for a in current.values() if a.referral_id])
            coverages = by_reference(conn, "Coverage", "beneficiary", "Patient", current)
        rows = []
        for patient_id, auth in current.items():
            referral = referrals.get(auth.referral_id or "")
            provider = ref_id(((referral.body if referral else {}).get("performer") or [None])[0], "Organization")
            network = _network([c.body for c in coverages.get(patient_id, []) if c.body.get("status") == "active"])
            patient = patients.get(patient_id)
            if patient is None or recipient not in (network, provider):
                continue
            rows.append(
                eligibility_row(
                    month=first,
                    patient=patient.body,
                    referral=referral.body if referral else None,
                    authorization=auth.body,
                    network_npi=npi_of(self.policy, network),
                    provider_npi=npi_of(self.policy, provider),
                    provider_name=self.policy.organization_name(provider or ""),
                )
            )
        yield from sorted(rows, key=lambda r: str(r["MEMBER_CIN"]))

    # --- ECM activity log --------------------------------------------------------------------------

    def activity(self, recipient: str, week_ending: date) -> Written:
        """The weekly ECM activity log (month to date of ``week_ending``) for an HN or ECM provider."""
        entry = self._record(ACTIVITY, recipient, week_ending.isoformat())
        return self._write(ACTIVITY, recipient, entry, self._activity_rows(recipient, week_ending))

    def _activity_rows(self, recipient: str, week_ending: date) -> Iterator[dict[str, Value]]:
        month = f"{week_ending:%Y-%m}"
        answer = dispatch(self.ctx, FhirRequest("GET", "$ecm-activity", query=[("month", month)]))
        parts = activity_parts(orjson.loads(answer.body or b"{}"))
        members = [str(p["patient"]) for p in parts]
        with self.ctx.repo.connect() as conn:
            patients = by_id(conn, "Patient", members)
            coverages = by_reference(conn, "Coverage", "beneficiary", "Patient", members)
        rows = []
        for part in parts:
            member, provider = str(part["patient"]), str(part["organization"])
            network = _network([c.body for c in coverages.get(member, []) if c.body.get("status") == "active"])
            if recipient not in (network, provider):
                continue
            patient = patients.get(member)
            rows.append(
                activity_row(
                    week_ending=week_ending,
                    activity=part,
                    cin=cin_of(patient.body) if patient else None,
                    provider_npi=npi_of(self.policy, provider),
                    provider_name=self.policy.organization_name(provider),
                )
            )
        yield from sorted(rows, key=lambda r: (str(r["MEMBER_CIN"]), str(r["PROVIDER_NPI"])))


def _network(coverages: list[dict[str, Any]]) -> str | None:
    for coverage in coverages:
        for extension in coverage.get("extension", ()):
            if extension.get("url") == EXT_HEALTH_NETWORK:
                return ref_id(extension.get("valueReference"), "Organization")
    return None
