"""The policy checks of an authorization decision (REFERENCE.md §3, §4), each refusing with a 422 whose
``expression`` points at the ``$decide`` Parameters element at fault (``Parameters.parameter[2].part[0]``).

Pure functions of the decision input, the referral's facts and the plan data: ``gateway.calaim.decide``
gathers the facts from the store and calls them before writing anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from gateway.calaim.authorizations import Authorization, Line
from gateway.calaim.closed_loop import TERMINAL
from gateway.calaim.config import X12_306_SYSTEM
from gateway.calaim.parameters import Param
from gateway.calaim.policy import CERTIFYING_DECISIONS, DECISION_TASK_MAP, NOTICE_OF_ACTION_REQUIRED, Policy
from gateway.calaim.resources import KIND_SYSTEM, period_end, refuse, to_date
from gateway.errors import Issue, Unprocessable

INITIAL, REAUTHORIZATION, PRESUMPTIVE = "initial", "reauthorization", "presumptive"
MODIFICATION, TERMINATION = "modification", "termination"
"""Codes of CodeSystem authorization-kind."""
CHANGES = (MODIFICATION, TERMINATION)
"""Kinds that change the referral's current authorization (a new version of it) instead of adding one."""


@dataclass(frozen=True, slots=True)
class LineInput:
    """A service line of the decision and where its parts are in the request."""

    line: Line
    code_at: str = ""
    modifiers_at: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """The ``$decide`` input (OperationDefinition decide); ``where`` maps a parameter name to its expression."""

    decision: str
    lines: tuple[LineInput, ...] = ()
    period_start: date | None = None
    period_end: date | None = None
    reason: str | None = None
    kind: str | None = None
    where: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None
    """The client's id of the decision request: a repeat answers the authorization it created."""

    @classmethod
    def of(
        cls,
        decision: str,
        *,
        lines: tuple[Line, ...] = (),
        period_start: date | None = None,
        period_end: date | None = None,
        reason: str | None = None,
        kind: str | None = None,
        request_id: str | None = None,
    ) -> DecisionInput:
        """A decision built in code (the demo, the file adapters): no request expressions."""
        line_inputs = tuple(LineInput(line) for line in lines)
        return cls(decision, line_inputs, period_start, period_end, reason, kind, request_id=request_id)

    @classmethod
    def parse(cls, root: Param) -> DecisionInput:
        """From Parameters already checked against the OperationDefinition (``gateway.calaim.parameters``)."""
        where = {p.name: p.expression for p in root.parts if p.name != "line"}
        values = {p.name: p.value for p in root.parts}
        lines: list[LineInput] = []
        for param in root.all("line"):
            code, modifiers, units = param.one("productOrService"), param.all("modifier"), param.one("units")
            if units is not None and (not isinstance(units.value, int) or units.value < 0):
                raise refuse(Unprocessable, "value", "Units are a whole number of 0 or more", units.expression)
            line = Line(
                code=str((code.value if code else {}).get("code")),
                modifiers=tuple(str(m.value.get("code")) for m in modifiers),
                units=units.value if units is not None else None,
            )
            code_at = code.expression if code else param.expression
            lines.append(LineInput(line, code_at, tuple(m.expression for m in modifiers)))
        dates = {name: _full_date(values.get(name), where.get(name, "")) for name in ("periodStart", "periodEnd")}
        return cls(
            decision=str(values["decision"]),
            lines=tuple(lines),
            period_start=dates["periodStart"],
            period_end=dates["periodEnd"],
            reason=values.get("reason"),
            kind=values.get("kind"),
            where=where,
            request_id=values.get("requestId"),
        )

    def at(self, *names: str) -> str:
        """The expression of the first of ``names`` present in the request ("" when none is)."""
        return next((self.where[n] for n in names if n in self.where), "")


def _full_date(value: object, where: str) -> date | None:
    if value is None:
        return None
    parsed = to_date(value)
    if parsed is None or len(str(value)) != 10:
        raise refuse(Unprocessable, "value", "A period boundary is a full date (YYYY-MM-DD)", where)
    return parsed


def certifies(policy: Policy, decision: str) -> bool:
    """Whether ``decision`` certifies the service (ValueSet certifying-decision)."""
    return policy.in_value_set(CERTIFYING_DECISIONS, X12_306_SYSTEM, decision)


def owes_notice(policy: Policy, decision: str, kind: str) -> bool:
    """Whether the decision is an adverse action that owes a Notice of Action (ValueSet notice-of-action-required)."""
    return policy.in_value_set(NOTICE_OF_ACTION_REQUIRED, X12_306_SYSTEM, decision) or policy.in_value_set(
        NOTICE_OF_ACTION_REQUIRED, KIND_SYSTEM, kind
    )


def check_reason(policy: Policy, inp: DecisionInput, kind: str) -> None:
    """A reason (``disposition``) is needed when a Notice of Action is owed or the referral ends (A2, A3, A6, C)."""
    ends = any(status in TERMINAL for status in policy.translate(DECISION_TASK_MAP, inp.decision))
    if inp.reason is None and (ends or owes_notice(policy, inp.decision, kind)):
        text = f"Decision {inp.decision} ({kind}) needs a reason: the Notice of Action and the referrer are told why"
        raise refuse(Unprocessable, "required", text, inp.at("decision"))


def resolve_kind(
    policy: Policy,
    inp: DecisionInput,
    *,
    service: str,
    pofs: list[str],
    provider: str | None,
    trusted: bool,
    previous: Authorization | None,
) -> str:
    """The kind of authorization (default: presumptive where required, reauthorization after a certified
    one, else initial) and its rules (REFERENCE.md §4)."""
    required = policy.presumptive_required(service, pofs)
    kind = inp.kind or (REAUTHORIZATION if previous else PRESUMPTIVE if required else INITIAL)
    where = inp.at("kind", "decision")
    certifying = certifies(policy, inp.decision)
    problem = ""
    if kind == PRESUMPTIVE and not trusted:
        problem = (
            f"Organization/{provider} is not flagged as trusted for presumptive authorization "
            "(ext-trusted-presumptive-provider; REFERENCE.md section 4)"
        )
    elif kind in (PRESUMPTIVE, *CHANGES) and not certifying:
        problem = f"A {kind} authorization certifies the service: decision A1, A2 or A6, not {inp.decision}"
    elif kind == INITIAL and required and previous is None:
        pof = ", ".join(p for p in pofs if p in policy.plan.presumptive.required_for_pofs)
        problem = f"ECM for POF {pof} requires presumptive authorization (REFERENCE.md section 4): kind presumptive"
    elif kind in (INITIAL, PRESUMPTIVE) and previous is not None:
        problem = f"The referral has authorization {previous.number}: use reauthorization, modification or termination"
    elif kind not in (INITIAL, PRESUMPTIVE) and previous is None:
        problem = f"A {kind} needs an earlier certified authorization of the referral, and it has none"
    if problem:
        raise refuse(Unprocessable, "business-rule", problem, where)
    return kind


def check_lines(policy: Policy, service: str, inp: DecisionInput, *, need_lines: bool) -> None:
    """Service lines use the DHCS codes and modifiers of the service and nothing else (REFERENCE.md §3);
    a housing deposit needs its own referral and authorization (plan.json ``ownAuthorization``)."""
    if need_lines and not inp.lines:
        text = f"Decision {inp.decision} certifies the service: it needs at least one service line (parameter line)"
        raise refuse(Unprocessable, "required", text, inp.at("decision"))
    allowed = policy.hcpcs(service)
    issues: list[Issue] = []
    for item in inp.lines:
        line = item.line
        pair = (line.code, line.modifiers[0] if line.modifiers else None)
        if len(line.modifiers) <= 1 and pair in allowed:
            continue  # the usual line: nothing to say, nothing to format
        shown = ", ".join(sorted(f"{c} {m or ''}".strip() for c, m in allowed)) or "none"
        if len(line.modifiers) > 1:
            text = f"{line.code}: one modifier per line; DHCS codes are used without additional modifiers ({shown})"
            issues.append(Issue("business-rule", text, expression=_at(item.modifiers_at[1])))
        elif pair in allowed:
            continue
        elif (rule := policy.needs_own_authorization(service, pair)) is not None:
            text = (
                f"{line.code} {pair[1] or ''} is a {rule.service} line: {rule.service} needs its own referral and "
                f"authorization; a {service} authorization does not include it (REFERENCE.md section 3)"
            )
            issues.append(Issue("business-rule", text, expression=_at(item.code_at)))
        elif line.code not in {code for code, _ in allowed}:
            text = f"HCPCS {line.code} is not a DHCS code of {service} (allowed: {shown}; REFERENCE.md section 3)"
            issues.append(Issue("code-invalid", text, expression=_at(item.code_at)))
        else:
            modifier = f"modifier {pair[1]}" if pair[1] else "no modifier"
            text = f"{line.code} with {modifier} is not a DHCS combination of {service} (allowed: {shown})"
            at = item.modifiers_at[0] if item.modifiers_at else item.code_at
            issues.append(Issue("code-invalid", text, expression=_at(at)))
    if issues:
        raise Unprocessable(message=issues[0].diagnostics, issues=issues)


def _at(expression: str) -> tuple[str, ...]:
    return (expression,) if expression else ()


def authorized_period(
    policy: Policy,
    inp: DecisionInput,
    *,
    service: str,
    kind: str,
    decided_on: date,
    previous: Authorization | None,
) -> tuple[date, date]:
    """The authorized period (REFERENCE.md §4): ECM by the plan's rule for the start date (from 2023-07-01,
    12 months initial and 6 per reauthorization, fixed); Community Supports by the plan's months per service,
    from the date the plan offers it. A modification may set both ends, a termination the end."""
    at_start, at_end = inp.at("periodStart", "decision"), inp.at("periodEnd", "decision")
    if kind in CHANGES and previous is not None and previous.start is not None:
        start = (inp.period_start or previous.start) if kind == MODIFICATION else previous.start
        end = inp.period_end or (decided_on if kind == TERMINATION else previous.end) or start
        if kind == TERMINATION and previous.end is not None and end > previous.end:
            text = f"A termination cannot extend the period past {previous.end}"
            raise refuse(Unprocessable, "business-rule", text, at_end)
        _offered(policy, service, start, at_start)
        return _ordered(start, end, at_end)
    start = inp.period_start or decided_on
    if kind == REAUTHORIZATION and inp.period_start is None and previous is not None and previous.end is not None:
        start = max(decided_on, previous.end + timedelta(days=1))  # continues the authorization it renews
    if policy.is_ecm(service):
        rule = policy.plan.ecm_period(start)
        if rule is None:
            first = min(p.effective_from for p in policy.plan.ecm.authorization_periods)
            raise refuse(Unprocessable, "business-rule", f"ECM authorizations start on or after {first}", at_start)
        months = rule.initial_months if kind in (INITIAL, PRESUMPTIVE) else rule.reauthorization_months
        computed = period_end(start, months)
        if inp.period_end is not None and not rule.months_are_maximum and inp.period_end != computed:
            text = (
                f"ECM authorizations effective from {rule.effective_from} are for {months} months ({start} to "
                f"{computed}): the plan may not set a shorter or longer period, nor blanket reassessment "
                "timeframes inside it (REFERENCE.md section 4)"
            )
            raise refuse(Unprocessable, "business-rule", text, at_end)
    else:
        _offered(policy, service, start, at_start)
        offering = policy.plan.community_support(service)
        assert offering is not None
        months = offering.authorization_months
        computed = period_end(start, months)
    if inp.period_end is not None and inp.period_end > computed:
        text = f"{service} is authorized for at most {months} months here: the period ends by {computed}"
        raise refuse(Unprocessable, "business-rule", text, at_end)
    return _ordered(start, inp.period_end or computed, at_end)


def _offered(policy: Policy, service: str, start: date, where: str) -> None:
    """A Community Support is authorized only from the date the plan offers it (plan.json ``offeredFrom``)."""
    if policy.is_ecm(service):
        return
    offering = policy.plan.community_support(service)
    if offering is None:
        raise refuse(Unprocessable, "business-rule", f"The plan does not offer the Community Support {service}", where)
    if start < offering.offered_from:
        text = f"The plan offers {service} from {offering.offered_from}: a period starting {start} is before it"
        raise refuse(Unprocessable, "business-rule", text, where)


def _ordered(start: date, end: date, where: str) -> tuple[date, date]:
    if end < start:
        raise refuse(Unprocessable, "value", f"The period ends ({end}) before it starts ({start})", where)
    return start, end
