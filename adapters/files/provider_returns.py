"""Rows of the ECM providers' return transmission file (RTF) and outreach tracker file (OTF) applied to the
store (issue 6; REFERENCE.md §5: plans may not require providers to report closed-loop statuses by any
other means than the RTF).

Both files come from an ECM provider (an Organization typed ecm-provider) about its own work: a row's
PROVIDER_NPI is the sender's NPI and MCP_ID the plan's NPI, and the member (by CIN) has an ECM referral
routed to the sender; otherwise the row is refused (``not-owned``).

- RTF: ECM_STATUS ENROLLED / DISCONTINUED writes the member's enrollment with the provider (EpisodeOfCare
  calaim-enrollment, one per member and provider, PUT with a stable id); REFERRAL_STATUS moves the
  referral's Task through the closed-loop rules (``gateway.calaim.closed_loop``: the hook checks the move,
  stamps the DHCS status and its date, requires the closure reason); a Task one step behind (requested when
  the RTF says outreach initiated or loop closed) passes through accepted first.
- OTF: each attempt is a Procedure (calaim-service-procedure), PUT with a stable id, based on the referral.

All writes go through ``dispatch`` (validation, profiles, hooks); a row whose resources already say the
same writes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import date
from functools import cached_property
from typing import Any

from adapters.files.hn_authorizations import npi_of, same_content
from adapters.files.importer import APPLIED, UNCHANGED, Outcome, Row
from adapters.files.lookup import by_reference, by_token
from gateway.calaim.closed_loop import can_move, closure_reason, recorded_status
from gateway.calaim.config import organization_types
from gateway.calaim.policy import Policy
from gateway.calaim.resources import (
    REFERRAL_STATUS_SYSTEM,
    conn_of,
    find,
    first_code,
    load,
    ref_id,
    set_extension,
    write,
)
from gateway.fhir.context import Context
from gateway.types import JSONObject
from mappings.files.layout import FieldError, Layout, layout
from mappings.files.provider_returns import ENROLLED_STATUSES, enrollment_of, outreach_of, task_move
from mappings.files.vocabulary import CIN_SYSTEM, SERVICE_SYSTEM


class _ProviderFile(ABC):
    """What RTF and OTF rows share: the sender checks, the member and the sender's ECM referral.

    ``apply`` refuses the rows the sender does not own or that ``_problems`` finds wrong and hands the
    others to ``_apply_row``."""

    layout: Layout

    def __init__(self, policy: Policy, sender: str) -> None:
        self.policy = policy
        self.sender = sender
        self.sender_npi = npi_of(policy, sender)
        self.plan_npi = npi_of(policy, policy.plan_organization)

    def sender_problem(self, sender: str) -> str | None:
        """Only an ECM provider sends these files."""
        org = self.policy.organizations.get(sender)
        if org is None or "ecm-provider" not in organization_types(org):
            return f"{sender} is not an ECM provider of the plan: it cannot send {self.layout.id}"
        return None

    def apply(self, ctx: Context, rows: list[Row]) -> list[Outcome]:
        """Apply the rows in ``ctx``'s transaction (module docstring)."""
        members, referrals = self._context(ctx, rows)
        out: list[Outcome] = []
        for row in rows:
            errors = self._owner_problems(row, members, referrals) + self._problems(row)
            if errors:
                out.append(errors)
                continue
            patient = members[str(row.values["MEMBER_CIN"])]
            out.append(self._apply_row(ctx, row, patient, self._latest(referrals[patient])))
        return out

    def _problems(self, row: Row) -> list[FieldError]:
        """What is wrong with the row itself (beyond who owns it)."""
        return []

    @abstractmethod
    def _apply_row(self, ctx: Context, row: Row, patient: str, referral: JSONObject) -> Outcome:
        """Write what a valid row of the member ``patient`` says about ``referral`` (each file type's own)."""

    def _context(self, ctx: Context, rows: list[Row]) -> tuple[dict[str, str], dict[str, list[JSONObject]]]:
        """CIN -> Patient id, and Patient id -> the member's ECM referrals routed to the sender."""
        conn = conn_of(ctx)
        found = by_token(conn, "Patient", "identifier", CIN_SYSTEM, (str(r.values["MEMBER_CIN"]) for r in rows))
        members = {cin: items[0].stored.res_id for cin, items in found.items()}
        referrals: dict[str, list[JSONObject]] = {}
        for patient, items in by_reference(conn, "ServiceRequest", "subject", "Patient", members.values()).items():
            for item in items:
                body = item.body
                performer = ref_id((body.get("performer") or [None])[0], "Organization")
                if (
                    first_code(body.get("code"), SERVICE_SYSTEM) == self.policy.plan.ecm.service
                    and performer == self.sender
                ):
                    referrals.setdefault(patient, []).append(body)
        return members, referrals

    def _owner_problems(
        self, row: Row, members: dict[str, str], referrals: dict[str, list[JSONObject]]
    ) -> list[FieldError]:
        values, line = row.values, row.line
        errors: list[FieldError] = []
        if values.get("MCP_ID") not in (self.plan_npi, self.policy.plan_organization):
            errors.append(FieldError(line, "MCP_ID", "value", "MCP_ID: not this plan's identifier (its NPI)"))
        if values.get("PROVIDER_NPI") != self.sender_npi:
            errors.append(FieldError(line, "PROVIDER_NPI", "not-owned", "PROVIDER_NPI: not the sending provider's NPI"))
        patient = members.get(str(values["MEMBER_CIN"]))
        if patient is None:
            errors.append(FieldError(line, "MEMBER_CIN", "unknown", "MEMBER_CIN: no member of the plan has this CIN"))
        elif not referrals.get(patient):
            text = "MEMBER_CIN: the member has no ECM referral routed to the sending provider"
            errors.append(FieldError(line, "MEMBER_CIN", "not-owned", text))
        return errors

    @staticmethod
    def _latest(referrals: list[JSONObject]) -> JSONObject:
        return max(referrals, key=lambda r: (str(r.get("authoredOn", "")), str(r.get("id"))))

    def _put(self, ctx: Context, resource: JSONObject) -> bool:
        """PUT ``resource`` unless the stored one says the same; whether it wrote."""
        found = load(conn_of(ctx), resource["resourceType"], str(resource["id"]))
        if found is not None and same_content(found[1], resource):
            return False
        write(ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)
        return True


class ReturnTransmissionHandler(_ProviderFile):
    """``RowHandler`` of layout ``return-transmission``."""

    layout = layout("return-transmission")

    def _problems(self, row: Row) -> list[FieldError]:
        """The dates and closure reason a status requires (REFERENCE.md section 5)."""
        values, line = row.values, row.line
        errors: list[FieldError] = []
        status = str(values["ECM_STATUS"])
        if status in ENROLLED_STATUSES and values.get("ECM_START_DATE") is None:
            errors.append(FieldError(line, "ECM_START_DATE", "required", f"ECM_START_DATE: required when {status}"))
        referral_status = values.get("REFERRAL_STATUS")
        closure = values.get("LOOP_CLOSURE_REASON")
        if referral_status == "LOOP_CLOSED" and closure is None:
            text = "LOOP_CLOSURE_REASON: required when the referral loop is closed (REFERENCE.md section 5)"
            errors.append(FieldError(line, "LOOP_CLOSURE_REASON", "required", text))
        stated_on, produced = values.get("REFERRAL_STATUS_DATE"), values.get("RTF_PRODUCTION_DATE")
        if isinstance(stated_on, date) and isinstance(produced, date) and stated_on > produced:
            text = "REFERRAL_STATUS_DATE: after RTF_PRODUCTION_DATE"
            errors.append(FieldError(line, "REFERRAL_STATUS_DATE", "value", text))
        return errors

    def _apply_row(self, ctx: Context, row: Row, patient: str, referral: JSONObject) -> Outcome:
        """The enrollment an enrolled status writes, and the referral's move."""
        values = row.values
        status = str(values["ECM_STATUS"])
        referral_status = values.get("REFERRAL_STATUS")
        closure = values.get("LOOP_CLOSURE_REASON")
        wrote = False
        if status in ENROLLED_STATUSES:
            provider = self.policy.org(self.sender)
            episode = enrollment_of(values, patient_id=patient, provider=provider, referral_id=str(referral["id"]))
            wrote = self._put(ctx, episode)
        if isinstance(referral_status, str):
            # A refused move raises: the importer rolls the chunk back and reports this row alone.
            wrote = self._move(ctx, str(referral["id"]), referral_status, closure) or wrote
        return APPLIED if wrote else UNCHANGED

    def _move(self, ctx: Context, referral_id: str, referral_status: str, closure: Any) -> bool:
        tasks = find(ctx, conn_of(ctx), "Task", [("focus", f"ServiceRequest/{referral_id}")], limit=1)
        if not tasks:
            return False
        task = tasks[0]
        move = task_move(referral_status, closure if isinstance(closure, str) else None)
        current = str(task.get("status"))
        code, _ = recorded_status(task)
        if current == move.status and (move.stated is None or code == move.stated):
            return False
        steps = [move.status]
        if not can_move(current, move.status) and can_move(current, "accepted") and can_move("accepted", move.status):
            steps = ["accepted", move.status]
        for step in steps:
            found = load(conn_of(ctx), "Task", str(task["id"]))
            assert found is not None
            task = found[1]
            task["status"] = step
            if step == move.status and move.stated is not None:
                task["businessStatus"] = {"coding": [self.policy.coded(REFERRAL_STATUS_SYSTEM, move.stated)]}
            if step == move.status and move.closure is not None:
                set_extension(task, closure_reason(self.policy, move.closure))
            write(ctx, "PUT", f"Task/{task['id']}", task)
        return True


class OutreachTrackerHandler(_ProviderFile):
    """``RowHandler`` of layout ``outreach-tracker``."""

    layout = layout("outreach-tracker")

    @cached_property
    def _methods(self) -> Mapping[str, str]:
        """OUTREACH_METHOD code -> display, from the layout."""
        return self.layout.column("OUTREACH_METHOD").values or {}

    @cached_property
    def _service_display(self) -> str | None:
        return self.policy.display(SERVICE_SYSTEM, self.policy.plan.ecm.service)

    def _apply_row(self, ctx: Context, row: Row, patient: str, referral: JSONObject) -> Outcome:
        """The outreach attempt as a Procedure based on the referral."""
        procedure = outreach_of(
            row.values,
            patient_id=patient,
            provider=self.policy.org(self.sender),
            referral_id=str(referral["id"]),
            method_display=self._methods.get(str(row.values["OUTREACH_METHOD"]), ""),
            service_display=self._service_display,
        )
        return APPLIED if self._put(ctx, procedure) else UNCHANGED
