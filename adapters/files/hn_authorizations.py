"""Rows of the HN daily authorization file (layout ``hn-authorization``) applied to the store (issue 6;
REFERENCE.md §4: an HN owns the authorizations created before the plan's cutover, 2023-01-01, and changes
them only through this file).

Per row, after the layout's checks, the workflow's own rules (``gateway.calaim.decision_rules``: DHCS
code/modifier pairs, periods, reasons owed) and the ownership rules:

- the member (by CIN) has an active Coverage naming the sending HN;
- ``ADD`` of a new number: decided before the cutover; the member's open referral for the service is
  used, or a referral is created by the workflow's rules (routed, with its Task);
  then the CoverageEligibilityRequest/Response pair is written with the HN's number, the Task moved as
  ``$decide`` moves it, and ``calaim.authorization`` enqueued;
- ``CHG`` / ``TRM`` (or ``ADD`` of a number already stored): the authorization must be the HN's
  (responsible party ``hn``, created before the cutover, same member); its new version (and its
  request's) is written, a termination completes the referral Task (closure reason services-received).

A row whose authorization already says what the row says writes nothing (``unchanged``). Lookups are
made for the whole chunk at once (``adapters.files.lookup``); the pair is built by the pure mapping
(``mappings.files.authorization``); no profile validation per row (the mapping's output and the bodies
the workflow builds are checked against the profiles in tests/files and tests/calaim).

Writes are set-based where the workflow allows (docs/files.md "Choices where the issue is silent"): the
``ADD`` rows that create a referral and move its new Task to a non-terminal status wait in ``_Pending``
and are taken in together by ``gateway.calaim.referral_batch.take_in`` (the referral hook's and the
closed-loop hook's rules for the whole batch: routing, duplicates, uniqueness keys, the Task with its two
versions and the events), then their pairs are created; changes that move no Task wait too and are
written with ``WriteTransaction.update_many``. Every other row writes through ``Context.store_create`` /
``store_update`` and the hooks, exactly as a REST write, after the waiting rows (so the file's order is
kept). ``HnAuthorizationHandler(..., batched=False)`` writes every row through the hooks (the reference
the batched path is tested against: tests/files/test_hn_batch.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from adapters.files import ledger
from adapters.files.importer import APPLIED, UNCHANGED, Outcome, Row, refusal_reason
from adapters.files.lookup import Found, by_id, by_reference, by_token
from gateway.calaim import events
from gateway.calaim.authorizations import Authorization, Line
from gateway.calaim.closed_loop import TERMINAL, can_move, closure_reason
from gateway.calaim.config import organization_types
from gateway.calaim.county import County, is_county_referral
from gateway.calaim.decide import CANCEL_CLOSURE, HEALTH_NETWORK, TERMINATION_CLOSURE
from gateway.calaim.decision_rules import (
    CHANGES,
    DecisionInput,
    authorized_period,
    certifies,
    check_lines,
    check_reason,
    owes_notice,
)
from gateway.calaim.policy import DECISION_TASK_MAP, Policy
from gateway.calaim.referral_batch import Member, NewReferral, Taken, batchable, member_of, take_in
from gateway.calaim.resources import (
    KIND_SYSTEM,
    OPEN_REQUEST_STATUSES,
    body_of,
    conn_of,
    first_code,
    ref_id,
    set_extension,
)
from gateway.errors import FhirError, InternalError
from gateway.fhir.context import Context
from gateway.store.outbox import NewEvent
from gateway.store.repository import StoredResource, WriteTransaction
from gateway.types import JSONObject
from mappings.files.authorization import AuthorizationRow, Refs, request_of, response_of
from mappings.files.layout import FieldError, layout
from mappings.files.vocabulary import (
    AUTHORIZATION_NUMBER_SYSTEM,
    CIN_SYSTEM,
    EXT_HEALTH_NETWORK,
    NPI_SYSTEM,
    PROFILE_REFERRAL,
    REFERRAL_ID_SYSTEM,
    RESPONSIBLE_PARTY_SYSTEM,
    SERVICE_SYSTEM,
)

LAYOUT = "hn-authorization"
MAX_FIXED_REFS = 4096
"""Bound of a handler's memo of ``Refs`` fields (``HnAuthorizationHandler._fixed``)."""


def record_digest(row: Row) -> str:
    """A digest of a record's fields as read, each stripped (equal for records written the same)."""
    text = "\x1f".join(map(str.strip, row.fields)) if row.fields else repr(sorted(row.values.items()))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def npi_index(policy: Policy) -> dict[str, str]:
    """NPI -> Organization id of the plan's configured Organizations."""
    out: dict[str, str] = {}
    for org_id, org in policy.organizations.items():
        for identifier in org.get("identifier", ()):
            if identifier.get("system") == NPI_SYSTEM and identifier.get("value"):
                out[str(identifier["value"])] = org_id
    return out


def npi_of(policy: Policy, org_id: str | None) -> str | None:
    """The NPI of a configured Organization."""
    org = policy.organizations.get(org_id or "")
    for identifier in (org or {}).get("identifier", ()):
        if identifier.get("system") == NPI_SYSTEM:
            return str(identifier.get("value"))
    return None


_NOT_CONTENT = ("id", "meta")
_STAMPS = ("versionId", "lastUpdated")


def same_content(stored: JSONObject, wanted: JSONObject) -> bool:
    """Whether a stored resource says what ``wanted`` says (ignoring id, versionId and lastUpdated; an
    absent ``meta`` is an empty one). Compared in place, element by element (no stripped copies)."""
    if len(stored) - sum(k in stored for k in _NOT_CONTENT) != len(wanted) - sum(k in wanted for k in _NOT_CONTENT):
        return False
    missing = object()
    for key, value in wanted.items():
        if key not in _NOT_CONTENT and stored.get(key, missing) != value:
            return False
    return _content_meta(stored) == _content_meta(wanted)


def _content_meta(resource: JSONObject) -> JSONObject:
    meta = resource.get("meta") or {}
    return {k: v for k, v in meta.items() if k not in _STAMPS} if meta.keys() & _STAMPS else meta


@dataclass
class _Chunk:
    """What the store holds for a chunk's rows (looked up once, updated as rows write)."""

    county: County
    """The county as referrals name it (``gateway.calaim.county``; from the context's settings)."""
    members: dict[str, str] = field(default_factory=dict)
    coverages: dict[str, JSONObject] = field(default_factory=dict)
    routing: dict[str, Member] = field(default_factory=dict)
    """What routing reads about the members (by Patient id)."""
    authorizations: dict[str, Found] = field(default_factory=dict)
    requests: dict[str, Found] = field(default_factory=dict)
    referrals: dict[str, list[JSONObject]] = field(default_factory=dict)
    county_referrals: dict[str, bool] = field(default_factory=dict)
    """Whether a referral (by id) is the county's: its authorization events go to the county's RRI too."""


@dataclass(frozen=True, slots=True)
class _Add:
    """An ADD row whose new referral waits for the batched intake (``_Pending``)."""

    index: int
    line: int
    row: AuthorizationRow
    patient: str
    coverage: JSONObject
    provider: str | None
    move: str | None


@dataclass(frozen=True, slots=True)
class _Change:
    """A CHG row (or an ADD of a stored number) whose new versions wait for ``WriteTransaction.update_many``."""

    index: int
    row: AuthorizationRow
    refs: Refs
    network: str | None
    response: JSONObject
    previous: StoredResource
    request_id: str
    request: JSONObject | None
    """The request's next version (None: unchanged)."""
    previous_request: StoredResource | None


@dataclass
class _Pending:
    """Rows written together: ADD rows that create a new referral (``referral_batch.take_in``) and changes
    that move no Task (``update_many``). A row that reads what a waiting row writes, and every row that
    writes through the hooks, first writes these (so the writes keep the file's order)."""

    entries: list[_Add | _Change] = field(default_factory=list)
    numbers: set[str] = field(default_factory=set)
    keys: set[tuple[str, str]] = field(default_factory=set)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    """The outcomes of the rows written so far, by index in the chunk."""

    def add(self, entry: _Add | _Change) -> None:
        self.entries.append(entry)
        self.numbers.add(entry.row.number)
        if isinstance(entry, _Add):
            self.keys.add((entry.patient, entry.row.service))

    def waits_for(self, row: AuthorizationRow, patient: str | None) -> bool:
        """Whether ``row`` reads what a waiting row writes (its number, or the member's referral)."""
        return row.number in self.numbers or (patient or "", row.service) in self.keys


class HnAuthorizationHandler:
    """``RowHandler`` of layout ``hn-authorization`` for one sending HN."""

    layout = layout(LAYOUT)
    key_index = layout.names.index(layout.key)

    def __init__(self, policy: Policy, sender: str, *, batched: bool = True) -> None:
        self.policy = policy
        self.sender = sender
        self.batched = batched
        """Rows written together per chunk (``_Pending``); False: every row through the hooks, one at a time."""
        self.npis = npi_index(policy)
        self.cutover = policy.plan.responsible_party.cutover
        self._fixed_refs: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
        """``_fixed`` by (decision, kind, service, provider, health network): a handful per file."""
        self._digests: dict[int, tuple[tuple[str, ...], str]] = {}
        """The last ``_digests_of`` call's digests by line, with the fields they digest."""

    def sender_problem(self, sender: str) -> str | None:
        """Only a health network sends this file."""
        org = self.policy.organizations.get(sender)
        if org is None or "health-network" not in organization_types(org):
            return f"{sender} is not a health network of the plan: it cannot send {LAYOUT}"
        return None

    # --- the chunk --------------------------------------------------------------------------------

    def apply(self, ctx: Context, rows: list[Row]) -> list[Outcome]:
        """Apply the rows in ``ctx``'s transaction (module docstring).

        Fast path first: a row whose digest equals the last row applied for its number, while that
        authorization is still at the version the row left it, is unchanged without reading anything
        else (``file_record``); the other rows take the full path with bulk lookups."""
        numbers = [str(row.values["AUTH_NUMBER"]) for row in rows]
        digests = self._digests_of(rows)
        same = self._same(conn_of(ctx), numbers, digests)
        outcomes: list[Outcome] = [UNCHANGED if i in same else [] for i in range(len(rows))]
        todo = [i for i in range(len(rows)) if i not in same]
        if not todo:
            return outcomes
        parsed = {i: AuthorizationRow.of(rows[i].values) for i in todo}
        chunk = self._lookup(ctx, list(parsed.values()))
        pending = _Pending() if self.batched and batchable(ctx) else None
        for i in todo:
            outcomes[i] = self._one(ctx, i, rows[i].line, parsed[i], chunk, pending)
        if pending is not None:
            self._write_pending(ctx, chunk, pending)
            for i, outcome in pending.outcomes.items():
                outcomes[i] = outcome
        entries: dict[str, ledger.Recorded] = {}
        for i in todo:
            found = chunk.authorizations.get(numbers[i])
            if outcomes[i] in (APPLIED, UNCHANGED) and found is not None:
                s = found.stored
                entries[numbers[i]] = ledger.Recorded(digests[i], s.res_type, s.res_id, s.version_id)
        ledger.remember(conn_of(ctx), LAYOUT, self.sender, entries)
        return outcomes

    def known(self, conn: Connection, rows: list[Row]) -> set[int]:
        """The lines of ``rows`` (not parsed: line and fields) the fast path finds unchanged (``KnownRows``):
        one query for the chunk on ``conn``, no parsing."""
        numbers = [row.fields[self.key_index].strip() for row in rows]
        same = self._same(conn, numbers, self._digests_of(rows))
        return {rows[i].line for i in same}

    def _digests_of(self, rows: list[Row]) -> list[str]:
        """``record_digest`` of each row, remembered for the next calls: the importer asks ``known`` for a
        block of chunks in a read snapshot, then for each of its chunks, again in the chunk's transaction,
        then ``apply``, for the same records (the same ``fields`` tuple, parsed or not). The memo is the
        last rows asked that were not all remembered already (a block, then its chunks hit it)."""
        memo, digests, missed = self._digests, [], False
        for row in rows:
            hit = memo.get(row.line)
            if hit is not None and hit[0] is row.fields:
                digests.append(hit[1])
            else:
                digests.append(record_digest(row))
                missed = True
        if missed:
            self._digests = {row.line: (row.fields, d) for row, d in zip(rows, digests, strict=True) if row.fields}
        return digests

    def _same(self, conn: Connection, numbers: list[str], digests: list[str]) -> set[int]:
        """The indexes of the records whose digest equals the last record applied for their number while
        that authorization is still at the version the record left it (the first record of a number in
        the chunk only: a later one follows a row of the chunk)."""
        current = ledger.current_digests(conn, LAYOUT, self.sender, numbers)
        if len(set(numbers)) == len(numbers):  # the usual chunk: one record per number
            return {i for i, number in enumerate(numbers) if current.get(number) == digests[i]}
        same: set[int] = set()
        seen: set[str] = set()
        for i, number in enumerate(numbers):
            if current.get(number) == digests[i] and number not in seen:
                same.add(i)
            seen.add(number)
        return same

    def _lookup(self, ctx: Context, rows: list[AuthorizationRow]) -> _Chunk:
        conn = conn_of(ctx)
        chunk = _Chunk(County.of(ctx.settings))
        patients = by_token(conn, "Patient", "identifier", CIN_SYSTEM, (r.cin for r in rows))
        chunk.members = {cin: found[0].stored.res_id for cin, found in patients.items()}
        coverages = by_reference(conn, "Coverage", "beneficiary", "Patient", chunk.members.values())
        for patient_id, found in coverages.items():
            active = [f.body for f in found if f.body.get("status") == "active"]
            if active:
                chunk.coverages[patient_id] = active[0]
        found_auths = by_token(
            conn, "CoverageEligibilityResponse", "identifier", AUTHORIZATION_NUMBER_SYSTEM, (r.number for r in rows)
        )
        chunk.authorizations = {number: found[-1] for number, found in found_auths.items()}
        request_ids = [
            ref_id(f.body.get("request"), "CoverageEligibilityRequest") for f in chunk.authorizations.values()
        ]
        chunk.requests = by_id(conn, "CoverageEligibilityRequest", [i for i in request_ids if i])
        adding = {chunk.members[r.cin] for r in rows if r.cin in chunk.members and r.number not in chunk.authorizations}
        for found in patients.values():  # what routing reads, for the members an ADD row may refer
            patient_id = found[0].stored.res_id
            if patient_id in adding:
                chunk.routing[patient_id] = member_of(found[0].body, [f.body for f in coverages.get(patient_id, ())])
        for patient_id, found in by_reference(conn, "ServiceRequest", "subject", "Patient", adding).items():
            chunk.referrals[patient_id] = [f.body for f in found]
        return chunk

    # --- one row ----------------------------------------------------------------------------------

    def _one(
        self, ctx: Context, index: int, line: int, row: AuthorizationRow, chunk: _Chunk, pending: _Pending | None
    ) -> Outcome:
        """The row's outcome; ``[]`` when it waits in ``pending`` (its outcome is set when written)."""
        patient = chunk.members.get(row.cin)
        if pending is not None and pending.waits_for(row, patient):
            self._write_pending(ctx, chunk, pending)
        errors = self._rules(line, row)
        coverage = chunk.coverages.get(patient or "")
        if patient is None:
            errors.append(FieldError(line, "MEMBER_CIN", "unknown", "MEMBER_CIN: no member of the plan has this CIN"))
        elif coverage is None:
            errors.append(FieldError(line, "MEMBER_CIN", "unknown", "MEMBER_CIN: the member has no active Coverage"))
        elif _network(coverage) != self.sender:
            text = "MEMBER_CIN: the member is not assigned to the sending health network"
            errors.append(FieldError(line, "MEMBER_CIN", "not-owned", text))
        provider = None
        if row.provider_npi is not None:
            provider = self.npis.get(row.provider_npi)
            if provider is None:
                text = "PROVIDER_NPI: no provider of the plan has this NPI"
                errors.append(FieldError(line, "PROVIDER_NPI", "unknown", text))
        existing = chunk.authorizations.get(row.number)
        stated = Authorization.of(existing.body) if existing is not None else None  # read once per row
        if stated is not None:
            problem = self._owned(stated, patient)
            if problem:
                errors.append(FieldError(line, "AUTH_NUMBER", "not-owned", f"AUTH_NUMBER: {problem}"))
        elif row.action != "ADD":
            text = f"AUTH_NUMBER: no authorization has this number ({row.action} needs one; ADD creates one)"
            errors.append(FieldError(line, "AUTH_NUMBER", "unknown", text))
        elif self.policy.plan.responsible_party.for_created(row.decided_on) != HEALTH_NETWORK:
            text = f"DECISION_DATE: an authorization created on or after {self.cutover} belongs to the plan, not the HN"
            errors.append(FieldError(line, "DECISION_DATE", "not-owned", text))
        if not errors:
            errors = self._workflow_rules(line, row, stated)
        if errors:
            return errors
        assert patient is not None and coverage is not None
        move = self._task_target(row)
        if existing is None and pending is not None:
            if (move is None or move not in TERMINAL) and self._open_referral(row, patient, chunk) is None:
                pending.add(_Add(index, line, row, patient, coverage, provider, move))
                return []
        elif existing is not None and pending is not None and move is None and self._plain_pairs(ctx):
            return self._change(ctx, row, patient, coverage, provider, existing, chunk, (pending, index), stated)
        if pending is not None:
            self._write_pending(ctx, chunk, pending)
        if existing is None:
            return self._add(ctx, row, patient, coverage, provider, chunk)
        return self._change(ctx, row, patient, coverage, provider, existing, chunk, stated=stated)

    @staticmethod
    def _plain_pairs(ctx: Context) -> bool:
        """Whether no write hook runs on the authorization pair (``update_many`` writes it without hooks)."""
        return not (
            ctx.hooks.for_type("CoverageEligibilityResponse") or ctx.hooks.for_type("CoverageEligibilityRequest")
        )

    def _rules(self, line: int, row: AuthorizationRow) -> list[FieldError]:
        """The row's own consistency (codes known, what the decision needs)."""
        errors: list[FieldError] = []
        if not self.policy.is_service(row.service):
            errors.append(FieldError(line, "SERVICE", "value", "SERVICE: not a code of CodeSystem calaim-service"))
            return errors
        if row.modifier is not None and row.hcpcs is None:
            errors.append(FieldError(line, "MODIFIER", "value", "MODIFIER: a modifier needs its HCPCS code"))
        certifying = certifies(self.policy, row.decision)
        if certifying or row.action == "TRM":
            for name, value in (("START_DATE", row.start), ("END_DATE", row.end)):
                if value is None:
                    text = f"{name}: required when the decision certifies (A1, A2, A6) and for a termination"
                    errors.append(FieldError(line, name, "required", text))
        if row.action == "TRM" and not certifying:
            text = "DECISION: a termination ends a certified authorization: A1, A2 or A6"
            errors.append(FieldError(line, "DECISION", "value", text))
        if row.start is not None and row.end is not None and row.end < row.start:
            errors.append(FieldError(line, "END_DATE", "value", "END_DATE: before START_DATE"))
        return errors

    def _owned(self, auth: Authorization, patient: str | None) -> str | None:
        if auth.responsible_party != HEALTH_NETWORK:
            return "the authorization belongs to the plan: it changes through the plan, not the HN's file"
        created = auth.body.get("created")
        if not isinstance(created, str) or created[:10] >= self.cutover.isoformat():
            return f"the authorization was created on or after {self.cutover}: the plan owns it"
        if patient is not None and auth.patient_id != patient:
            return "the number names another member's authorization"
        return None

    def _workflow_rules(self, line: int, row: AuthorizationRow, previous: Authorization | None) -> list[FieldError]:
        """The rules ``$decide`` applies (DHCS lines, period, reason owed), as row errors."""
        lines = (Line(row.hcpcs, (row.modifier,) if row.modifier else (), row.units),) if row.hcpcs else ()
        inp = DecisionInput.of(
            row.decision, lines=lines, period_start=row.start, period_end=row.end, reason=row.reason, kind=row.kind
        )
        checks: list[tuple[str, Any]] = [
            ("REASON", lambda: check_reason(self.policy, inp, row.kind)),
            (
                "HCPCS",
                lambda: check_lines(
                    self.policy,
                    row.service,
                    inp,
                    need_lines=certifies(self.policy, row.decision) and row.kind not in CHANGES,
                ),
            ),
        ]
        if certifies(self.policy, row.decision):
            kind = row.kind if previous is not None else "initial"
            checks.append(
                (
                    "END_DATE",
                    lambda: authorized_period(
                        self.policy, inp, service=row.service, kind=kind, decided_on=row.decided_on, previous=previous
                    ),
                )
            )
        errors: list[FieldError] = []
        for column, check in checks:
            try:
                check()
            except FhirError as exc:
                where = "START_DATE" if column == "END_DATE" and "start" in exc.message else column
                errors.append(FieldError(line, where, "business-rule", f"{where}: {exc.message}"))
        return errors

    # --- writes -----------------------------------------------------------------------------------

    def _refs(
        self, row: AuthorizationRow, patient: str, coverage: JSONObject, referral: str, provider: str | None
    ) -> Refs:
        network = _network(coverage)
        key = (row.decision, row.kind, row.service, provider, network)
        fixed = self._fixed_refs.get(key)
        if fixed is None:
            if len(self._fixed_refs) >= MAX_FIXED_REFS:
                self._fixed_refs.clear()
            fixed = self._fixed_refs[key] = self._fixed(row, provider, network)
        plan, provider_ref, notice, *rest = fixed  # References copied: no two rows' bodies share a dict
        copied = (dict(plan), dict(provider_ref) if provider_ref else None, dict(notice) if notice else None)
        return Refs(patient, str(coverage["id"]), referral, *copied, *rest)

    def _fixed(self, row: AuthorizationRow, provider: str | None, network: str | None) -> tuple[Any, ...]:
        """The fields of ``Refs`` after the three ids: what the plan's configuration says for the row's
        decision, kind, service, provider and health network (the same for every row that shares them)."""
        policy = self.policy
        notice = network if owes_notice(policy, row.decision, row.kind) and network else None
        return (
            policy.org(policy.plan_organization),
            policy.org(provider) if provider else None,
            policy.org(notice) if notice else None,
            policy.display(SERVICE_SYSTEM, row.service),
            policy.decision_display(row.decision),
            policy.display(KIND_SYSTEM, row.kind),
            HEALTH_NETWORK,
            policy.display(RESPONSIBLE_PARTY_SYSTEM, HEALTH_NETWORK),
            "complete" if policy.translate(DECISION_TASK_MAP, row.decision) else "queued",
            certifies(policy, row.decision),
        )

    def _add(
        self,
        ctx: Context,
        row: AuthorizationRow,
        patient: str,
        coverage: JSONObject,
        provider: str | None,
        chunk: _Chunk,
    ) -> Outcome:
        referral = self._referral(ctx, row, patient, provider, chunk)
        authorization_events = self._write_pair(ctx, row, patient, coverage, provider, referral, chunk)
        self._move_task(ctx, str(referral["id"]), row)
        events.emit_many(ctx, authorization_events)
        return APPLIED

    def _write_pair(
        self,
        ctx: Context,
        row: AuthorizationRow,
        patient: str,
        coverage: JSONObject,
        provider: str | None,
        referral: JSONObject,
        chunk: _Chunk,
    ) -> list[NewEvent]:
        """Write the authorization pair of an ADD row, answering ``referral``; the outbox rows of its
        ``calaim.authorization`` event (enqueued after the Task move)."""
        referral_id = str(referral["id"])
        provider = provider or ref_id((referral.get("performer") or [None])[0], "Organization")
        refs = self._refs(row, patient, coverage, referral_id, provider)
        request_body = request_of(row, refs)
        request = _create(ctx, request_body)
        response = response_of(row, refs, request_id=request.res_id)
        stored = _create(ctx, response)
        # The bodies as built (``store_create`` stamps a copy): the chunk compares contents only (same_content)
        chunk.authorizations[row.number] = Found(stored, response)
        chunk.requests[request.res_id] = Found(request, request_body)
        county = chunk.county_referrals[referral_id] = is_county_referral(referral, chunk.county)
        return self._events(row, refs, stored, request.res_id, _network(coverage), county=county)

    def _write_pending(self, ctx: Context, chunk: _Chunk, pending: _Pending) -> None:
        """Write the waiting ADD rows: their referrals and Tasks (moved as the decisions move them) through
        ``referral_batch.take_in``, then each row's pair and event; a refused referral (routing) is its
        row's error (as the hook's refusal of the row alone would be). Outcomes go to ``pending.outcomes``."""
        if not pending.entries:
            return
        entries, pending.entries = pending.entries, []
        pending.numbers.clear()
        pending.keys.clear()
        adds = [e for e in entries if isinstance(e, _Add)]
        orders = [NewReferral(self._new_referral(a.row, a.patient, a.provider), a.move, a.row.reason) for a in adds]
        taken = iter(take_in(ctx, self.policy, orders, members=chunk.routing) if orders else [])
        updates: list[tuple[JSONObject, StoredResource]] = []
        for change in (e for e in entries if isinstance(e, _Change)):
            updates.append((change.response, change.previous))
            if change.request is not None and change.previous_request is not None:
                updates.append((change.request, change.previous_request))
        written = iter(_tx(ctx).update_many(updates))
        _county_referrals(ctx, chunk, [e.refs.referral_id for e in entries if isinstance(e, _Change)])
        emits: list[NewEvent] = []  # calaim.authorization in the file's order, enqueued at once
        for entry in entries:
            if isinstance(entry, _Change):
                stored = next(written)
                chunk.authorizations[entry.row.number] = Found(stored, entry.response)  # stamped by the write
                if entry.request is not None:
                    chunk.requests[entry.request_id] = Found(next(written), entry.request)
                county = chunk.county_referrals[entry.refs.referral_id]
                emits += self._events(entry.row, entry.refs, stored, entry.request_id, entry.network, county=county)
                pending.outcomes[entry.index] = APPLIED
                continue
            result = next(taken)
            if isinstance(result, Taken):
                if result.created:
                    chunk.referrals.setdefault(entry.patient, []).append(result.body)
                row = entry.row
                emits += self._write_pair(ctx, row, entry.patient, entry.coverage, entry.provider, result.body, chunk)
                if not result.created:  # an open referral answered: its Task moves through the hooks
                    self._move_task(ctx, result.referral.res_id, row)
                pending.outcomes[entry.index] = APPLIED
            else:
                pending.outcomes[entry.index] = [FieldError(entry.line, "", "business-rule", refusal_reason(result))]
        events.emit_many(ctx, emits)

    def _task_target(self, row: AuthorizationRow) -> str | None:
        """The status ``$decide`` moves the referral Task to for this row (``_move_task``), if any."""
        if row.kind == "initial":
            targets = self.policy.translate(DECISION_TASK_MAP, row.decision)
        else:
            targets = ["completed"] if row.kind == "termination" else []
        return targets[0] if targets else None

    def _open_referral(self, row: AuthorizationRow, patient: str, chunk: _Chunk) -> JSONObject | None:
        """The member's open referral for the row's service, as the chunk knows it."""
        for referral in chunk.referrals.get(patient, ()):
            service = first_code(referral.get("code"), SERVICE_SYSTEM)
            if service == row.service and referral.get("status") in OPEN_REQUEST_STATUSES:
                return referral
        return None

    def _new_referral(self, row: AuthorizationRow, patient: str, provider: str | None) -> JSONObject:
        """The referral an ADD row creates when the member has no open one for the service."""
        body: JSONObject = {
            "resourceType": "ServiceRequest",
            "meta": {"profile": [PROFILE_REFERRAL]},
            "identifier": [{"system": REFERRAL_ID_SYSTEM, "value": f"{self.sender}-{row.number}"}],
            "status": "active",
            "intent": "order",
            "code": {"coding": [self.policy.coded(SERVICE_SYSTEM, row.service)]},
            "subject": {"reference": f"Patient/{patient}"},
            "authoredOn": row.decided_on.isoformat(),
            "requester": self.policy.org(self.sender),
        }
        if provider is not None:
            body["performer"] = [self.policy.org(provider)]
        return body

    def _referral(
        self, ctx: Context, row: AuthorizationRow, patient: str, provider: str | None, chunk: _Chunk
    ) -> JSONObject:
        """The member's open referral for the service, or a new one written through the FHIR core."""
        found = self._open_referral(row, patient, chunk)
        if found is not None:
            return found
        body = self._new_referral(row, patient, provider)
        stored, _ = ctx.store_create(_tx(ctx), body, res_id=None, method="POST")
        referral = body_of(stored)
        chunk.referrals.setdefault(patient, []).append(referral)
        return referral

    def _change(
        self,
        ctx: Context,
        row: AuthorizationRow,
        patient: str,
        coverage: JSONObject,
        provider: str | None,
        existing: Found,
        chunk: _Chunk,
        waiting: tuple[_Pending, int] | None = None,
        stated: Authorization | None = None,
    ) -> Outcome:
        """A new version of a stored authorization (and of its request); ``waiting``: the pending rows and
        this row's index, to write it with them (a change that moves no Task); ``stated``: ``existing`` as
        ``Authorization.of`` reads it, when the caller has read it already."""
        previous = existing.body
        referral_id = str((stated or Authorization.of(previous)).referral_id)
        request_id = ref_id(previous.get("request"), "CoverageEligibilityRequest")
        if request_id is None:
            raise InternalError("a stored authorization answers no request")
        provider = provider or ref_id(previous.get("requestor"), "Organization")
        refs = self._refs(row, patient, coverage, referral_id, provider)
        response = response_of(row, refs, request_id=request_id)
        response["created"] = previous.get("created", response["created"])
        response["id"] = existing.stored.res_id
        if same_content(previous, response):
            return UNCHANGED
        if waiting is not None:
            pending, index = waiting
            request: JSONObject | None = None
            old = chunk.requests.get(request_id)
            if old is not None:
                request = request_of(row, refs)
                request["id"] = request_id
                request = None if same_content(old.body, request) else request
            previous_request = old.stored if old is not None and request is not None else None
            network = _network(coverage)
            change = _Change(
                index, row, refs, network, response, existing.stored, request_id, request, previous_request
            )
            pending.add(change)
            return []
        tx = _tx(ctx)
        stored = ctx.store_update(tx, response, existing.stored, method="PUT")
        chunk.authorizations[row.number] = Found(stored, body_of(stored))
        old_request = chunk.requests.get(request_id)
        if old_request is not None:
            request = request_of(row, refs)
            request["id"] = request_id
            if not same_content(old_request.body, request):
                written = ctx.store_update(tx, request, old_request.stored, method="PUT")
                chunk.requests[request_id] = Found(written, body_of(written))
        self._move_task(ctx, referral_id, row)
        _county_referrals(ctx, chunk, [referral_id])
        county = chunk.county_referrals[referral_id]
        events.emit_many(ctx, self._events(row, refs, stored, request_id, _network(coverage), county=county))
        return APPLIED

    def _move_task(self, ctx: Context, referral_id: str, row: AuthorizationRow) -> None:
        """Move the referral's Task as ``$decide`` does: on the first decision per ConceptMap
        decision-task-status; a termination completes it; a move the Task's state forbids is left out."""
        target = self._task_target(row)
        if target is None:
            return
        targets = [target]
        found = by_reference(conn_of(ctx), "Task", "focus", "ServiceRequest", [referral_id]).get(referral_id)
        if not found:
            return
        task, previous = found[0].body, found[0].stored
        if task.get("status") == targets[0] or not can_move(str(task.get("status")), targets[0]):
            return
        task["status"] = targets[0]
        if row.reason:
            task["statusReason"] = {"text": row.reason}
        if row.kind == "termination":
            set_extension(task, closure_reason(self.policy, TERMINATION_CLOSURE, row.reason))
        elif targets[0] == "cancelled":
            set_extension(task, closure_reason(self.policy, CANCEL_CLOSURE, row.reason))
        ctx.store_update(_tx(ctx), task, previous, method="PUT")

    def _events(
        self, row: AuthorizationRow, refs: Refs, stored: Any, request_id: str, network: str | None, *, county: bool
    ) -> list[NewEvent]:
        """The outbox rows of ``calaim.authorization``, with the payload ``$decide`` gives it
        (docs/calaim-workflow.md), to enqueue with ``events.emit_many``; ``county``: whether the referral is
        a county referral (then the county's RRI gets the event too: ``gateway.calaim.events``). The HN owns
        the authorization, so the reconciliation file does not carry it back: without a county referral the
        event has no consumer, and no payload is built."""
        if not events.consumers(events.AUTHORIZATION, county=county, hn_owned=True):
            return []
        lines = [{"code": row.hcpcs, "modifiers": [row.modifier] if row.modifier else [], "units": row.units}]
        payload: JSONObject = {
            "authorization": row.number,
            "request": f"CoverageEligibilityRequest/{request_id}",
            "referral": f"ServiceRequest/{refs.referral_id}",
            "patient": f"Patient/{refs.patient_id}",
            "service": row.service,
            "decision": row.decision,
            "kind": row.kind,
            "responsibleParty": HEALTH_NETWORK,
            "healthNetwork": f"Organization/{network}" if network else None,
            "noticeOfActionOwner": refs.notice_owner["reference"] if refs.notice_owner else None,
            "provider": refs.provider["reference"] if refs.provider else None,
            "period": (
                {"start": row.start.isoformat(), "end": row.end.isoformat()}
                if refs.certified and row.start and row.end
                else None
            ),
            "lines": lines if row.hcpcs else [],
            "decidedOn": row.decided_on.isoformat(),
        }
        return events.events_of(events.AUTHORIZATION, stored=stored, payload=payload, county=county)


def _county_referrals(ctx: Context, chunk: _Chunk, referral_ids: list[str]) -> None:
    """Record in ``chunk.county_referrals`` whether each referral of ``referral_ids`` is the county's (those
    not known yet read with one query: ``gateway.calaim.county``; a referral not found is not)."""
    unknown = {i for i in referral_ids if i not in chunk.county_referrals}
    if not unknown:
        return
    found = by_id(conn_of(ctx), "ServiceRequest", unknown)
    for referral_id in unknown:
        referral = found.get(referral_id)
        chunk.county_referrals[referral_id] = referral is not None and is_county_referral(referral.body, chunk.county)


def _network(coverage: JSONObject) -> str | None:
    for extension in coverage.get("extension", ()):
        if extension.get("url") == EXT_HEALTH_NETWORK:
            return ref_id(extension.get("valueReference"), "Organization")
    return None


def _create(ctx: Context, body: JSONObject) -> StoredResource:
    """Create ``body`` (a resource of the pair) through the hooks of its type (``Context.store_create``),
    or straight into the transaction when it has none (what ``store_create`` then does, without building
    its hook context)."""
    tx: WriteTransaction = _tx(ctx)
    if ctx.hooks.for_type(body["resourceType"]):
        return ctx.store_create(tx, body, res_id=None, method="POST")[0]
    return tx.create(dict(body), res_id=None, method="POST")


def _tx(ctx: Context) -> Any:
    if ctx.tx is None:
        raise InternalError("file rows are applied inside a write transaction")
    return ctx.tx
