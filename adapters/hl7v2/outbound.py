"""RRI^I12 to the county from the outbox (docs/hl7v2.md "RRI^I12 out").

The CalAIM workflow writes ``calaim.authorization`` and ``calaim.referral-status`` events in the
transaction of the change (gateway/calaim/events.py); this sender consumes the ``hl7v2`` queues of both
with ``OutboxWorker`` (claim with a lease, retries with exponential backoff, fenced completion):

- only county referrals produce an RRI: referrals that came in over v2 (they carry the county's referral
  id) or whose requester or performer is the county Organization (``gateway.calaim.county``). The workflow
  writes the ``hl7v2`` events of county referrals only; an event of another referral (written before
  session 7, or its referral changed since) is completed unsent, counted (``skipped``) and logged with its
  event id and queue only;
- MSH-10 is ``RRI`` + the outbox event id: a resend of one change (after a crash or a lost ACK) carries
  the same control id, so the county can drop the duplicate; one change is one event (its dedupe key);
- an AA (or CA) completes the event; AE/AR answers and missing ACKs fail it: the event is retried after
  the backoff until an AA arrives (or, after ``CALAIM_OUTBOX_MAX_ATTEMPTS`` attempts, parked as dead until
  ``calaim-gateway outbox requeue``: docs/outbox.md), and every attempt is recorded in the message log (``status``,
  ``ack``, ``error``: ``calaim-gateway mllp log --direction out --status AE``) and logged as a warning
  with the event id and the ERR codes only (``outbox.last_error`` holds the same).

``calaim.referral`` has no ``hl7v2`` queue (the status event of the referral's Task tells the county; a
REF^I12 to the county for referrals that did not come from it is not part of issue 7).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from adapters.hl7v2 import messagelog
from adapters.hl7v2.client import MllpClient, MllpError
from gateway.calaim import events
from gateway.calaim.county import County
from gateway.calaim.county import is_county_referral as county_referral
from gateway.calaim.policy import Policy
from gateway.calaim.resources import AUTHORIZATION_NUMBER_SYSTEM, body_of, ref_id
from gateway.fhir.context import Context
from gateway.settings import Settings
from gateway.store.outbox import DeliveryFailed, OutboxEvent, OutboxWorker
from gateway.store.schema import hl7v2_message
from gateway.types import JSONObject
from mappings.hl7v2.er7 import HeaderError, read_header, split_segments
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.rri_i12 import Party, RriEnvelope, RriInput, build_rri
from mappings.hl7v2.tables import NPI_SYSTEM

log = logging.getLogger("adapters.hl7v2")

QUEUES = (
    events.queue(events.AUTHORIZATION, events.HL7V2),
    events.queue(events.REFERRAL_STATUS, events.HL7V2),
)
TOPICS = {QUEUES[0]: "authorization", QUEUES[1]: "referral-status"}
SKIP_LOG_EVERY = 1000
"""A skipped event is logged when it is the first, then every ``SKIP_LOG_EVERY``-th (the count with it)."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` → (host, port)."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("hl7v2_county_endpoint must be host:port")
    return host.strip("[]"), int(port)


class RriSender:
    """Delivers one outbox event as an RRI^I12 (``deliver`` is an ``OutboxWorker`` callback)."""

    def __init__(self, ctx: Context, settings: Settings, policy: Policy, config: MappingConfig) -> None:
        if not settings.hl7v2_county_endpoint:
            raise ValueError("the RRI sender needs hl7v2_county_endpoint")
        host, port = parse_endpoint(settings.hl7v2_county_endpoint)
        self.ctx = ctx
        self.settings = settings
        self.policy = policy
        self.config = config
        self.client = MllpClient(host, port, timeout=settings.hl7v2_ack_timeout_s)
        self.county = County.of(settings)
        self.sent = 0
        self.skipped = 0
        """Events completed unsent: not a county referral's (the workflow writes none since session 7)."""

    @property
    def engine(self) -> Engine:
        return self.ctx.repo.engine

    def workers(self, *, lease_seconds: float | None = None) -> list[OutboxWorker]:
        """One worker per queue; a delivery must end within half the lease (the ACK timeout + connect); an
        event still failing after ``outbox_max_attempts`` is parked as dead (docs/outbox.md)."""
        lease = lease_seconds or max(30.0, 4 * self.settings.hl7v2_ack_timeout_s + 10)
        attempts = self.settings.outbox_max_attempts
        return [
            OutboxWorker(self.engine, topic, self.deliver, batch=20, lease_seconds=lease, max_attempts=attempts)
            for topic in QUEUES
        ]

    def deliver(self, event: OutboxEvent) -> None:
        """Send the RRI of ``event`` (or nothing, for events that are not the county's); raise to retry."""
        topic = TOPICS[event.topic]
        referral_id = ref_id(event.payload.get("referral"), "ServiceRequest")
        referral = self._read("ServiceRequest", referral_id)
        if referral is None or not self.is_county_referral(referral):
            self._skip(event)
            return
        patient = self._read("Patient", ref_id(referral.get("subject"), "Patient"))
        if patient is None:
            raise DeliveryFailed("the referral's member cannot be read")
        authorization = self._authorization(event) if topic == "authorization" else None
        envelope = RriEnvelope(
            control_id=f"RRI{event.id}",
            timestamp=datetime.now(self.config.zone).strftime("%Y%m%d%H%M%S%z"),
            sending_application=self.settings.hl7v2_application,
            sending_facility=self.settings.hl7v2_facility,
            receiving_application=self.settings.hl7v2_county_application,
            receiving_facility=self.settings.hl7v2_county_facility,
            processing_id=self.settings.hl7v2_processing_id,
            original_control_id=self._original_control_id(str(referral["id"])),
        )
        data = RriInput(
            topic=topic,
            payload=event.payload,
            referral=referral,
            patient=patient,
            authorization=authorization,
            parties=self._parties(referral),
            plan_id=self.policy.plan_organization,
            plan_name=self.policy.plan.plan.name,
            mrn_system=self.config.mrn_system,
            referral_id_system=self.config.referral_id_system,
        )
        raw = build_rri(envelope, data).encode("utf-8")
        self._send(event, envelope, raw)

    def is_county_referral(self, referral: JSONObject) -> bool:
        """A referral that came in over v2 (the county's referral id) or names the county as requester/performer
        (``gateway.calaim.county.is_county_referral``: the rule the workflow applies when it writes the event)."""
        return county_referral(referral, self.county)

    def _skip(self, event: OutboxEvent) -> None:
        """Complete ``event`` unsent (its referral is not the county's, or cannot be read): counted, and
        logged with the event id and queue only (no PHI), the first time and every ``SKIP_LOG_EVERY``-th."""
        self.skipped += 1
        if self.skipped == 1 or self.skipped % SKIP_LOG_EVERY == 0:
            log.warning(
                "hl7v2: outbox event %d (%s) is not a county referral's: completed unsent (%d so far)",
                event.id,
                event.topic,
                self.skipped,
            )

    def _send(self, event: OutboxEvent, envelope: RriEnvelope, raw: bytes) -> None:
        sender = f"{envelope.sending_application}|{envelope.sending_facility}"
        row_id = self._log_attempt(event, sender, envelope.control_id, raw)
        try:
            ack = self.client.send(raw)
        except MllpError as exc:
            self._log_result(row_id, "error", None, str(exc)[:200])
            raise DeliveryFailed(str(exc)) from None
        code, acked, errors = _read_ack(ack)
        if acked != envelope.control_id:
            self._log_result(row_id, "error", ack, "ACK for another message")
            raise DeliveryFailed("ACK for another message (MSA-2)")
        if code in ("AA", "CA"):
            self._log_result(row_id, "AA", ack, None)
            self.sent += 1
            return
        summary = f"{code} {' '.join(errors)}".strip()[:200]
        self._log_result(row_id, code or "error", ack, summary)
        log.warning("hl7v2: RRI for outbox event %d answered %s", event.id, summary)
        raise DeliveryFailed(summary)

    def _log_attempt(self, event: OutboxEvent, sender: str, control_id: str, raw: bytes) -> int:
        with self.engine.begin() as conn:
            existing = messagelog.find(conn, messagelog.OUT, sender, control_id)
            if existing is not None:
                messagelog.update_row(conn, existing.id, raw=raw, status="pending")
                return existing.id
            try:
                with conn.begin_nested():
                    return messagelog.insert_row(
                        conn,
                        direction=messagelog.OUT,
                        sender=sender,
                        control_id=control_id,
                        message_type="RRI^I12",
                        status="pending",
                        raw=raw,
                        charset="UNICODE UTF-8",
                        outbox_id=event.id,
                        resources=[str(event.payload.get("referral") or "")],
                    )
            except IntegrityError:
                found = messagelog.find(conn, messagelog.OUT, sender, control_id)
                assert found is not None
                return found.id

    def _log_result(self, row_id: int, status: str, ack: bytes | None, error: str | None) -> None:
        with self.engine.begin() as conn:
            messagelog.update_row(conn, row_id, count_attempt=False, status=status, ack=ack, error=error)

    def _read(self, res_type: str, res_id: str | None) -> JSONObject | None:
        if res_id is None:
            return None
        stored = self.ctx.repo.read(res_type, res_id)
        if stored is None or stored.deleted:
            return None
        return body_of(stored)

    def _authorization(self, event: OutboxEvent) -> JSONObject | None:
        number = event.payload.get("authorization")
        if not number:
            return None
        params = [("identifier", f"{AUTHORIZATION_NUMBER_SYSTEM}|{number}")]
        with self.ctx.repo.connect() as conn:
            found = self.ctx.search.find(conn, resource_type="CoverageEligibilityResponse", params=params, limit=1)
        return self._read("CoverageEligibilityResponse", found[0].res_id) if found else None

    def _parties(self, referral: JSONObject) -> list[Party]:
        parties: list[Party] = []
        for role, refs in (("RP", [referral.get("requester")]), ("RT", referral.get("performer") or [])):
            for ref in refs:
                org_id = ref_id(ref, "Organization")
                if org_id is None:
                    continue
                organization = self.policy.organizations.get(org_id) or {}
                npi = next(
                    (i["value"] for i in organization.get("identifier") or () if i.get("system") == NPI_SYSTEM), None
                )
                name = self.policy.organization_name(org_id) or str((ref or {}).get("display") or org_id)
                parties.append(Party(role, name, npi))
        return parties

    def _original_control_id(self, referral_id: str) -> str | None:
        """MSH-10 of the county's REF^I12 that created the referral, from the message log."""
        c = hl7v2_message.c
        query = (
            select(c.control_id)
            .where(
                c.direction == messagelog.IN, c.status == "AA", c.resources.like(f'%"ServiceRequest/{referral_id}"%')
            )
            .order_by(c.id)
            .limit(1)
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return str(found) if found else None


def _read_ack(ack: bytes) -> tuple[str, str, list[str]]:
    """MSA-1, MSA-2 and the ERR-3 codes of an ACK ("" when unreadable)."""
    try:
        header = read_header(ack)
    except HeaderError:
        return "", "", []
    text = ack.decode("latin-1")
    d = header.delimiters
    code = acked = ""
    errors: list[str] = []
    for line in split_segments(text):
        fields = line.split(d.field)
        if fields[0] == "MSA":
            code = fields[1] if len(fields) > 1 else ""
            acked = fields[2].split(d.component)[0] if len(fields) > 2 else ""
        elif fields[0] == "ERR" and len(fields) > 3:
            errors.append(fields[3].split(d.component)[0])
    return code, acked, errors
