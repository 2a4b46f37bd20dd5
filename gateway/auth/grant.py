"""What a validated SMART access token grants its bearer (SMART App Launch 2.x, scopes-and-launch-context).

The authorization server (``adapters/smart``) issues access tokens and verifies them into a ``Grant``;
the FHIR core enforces a ``Grant`` without knowing how tokens look. ``Grant.internal()`` is the
gateway's own adapters (HL7 v2, files), which act for the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class InvalidToken(Exception):
    """The bearer token is missing, malformed, expired, revoked, or not for this server (401)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Grant:
    """The access of one caller, from its access token."""

    subject: str
    """``sub`` of the token: the user name (app launch) or the client id (backend services)."""
    client_id: str
    scope: str
    """The granted scopes, space-separated, as in the token response."""
    token_id: str
    """``jti`` of the access token (audit, revocation)."""
    expires_at: int
    """``exp`` (seconds since the epoch)."""
    patient: str | None = None
    """Launch context ``patient`` (a Patient id) of ``patient/`` scopes."""
    fhir_user: str | None = None
    """``fhirUser`` of the signed-in user, e.g. ``Practitioner/p-1``."""
    organization: str | None = None
    """The Organization id the user or backend client acts for; ``None`` only for ``internal``."""
    encounter: str | None = None
    """Launch context ``encounter`` (an Encounter id), when the EHR launch gave one."""
    _hash: int = field(init=False, repr=False, compare=False)
    """The hash of the fields above, computed once: a grant keys the guard's ``Access`` cache on every
    request (``gateway.fhir.guard.access_for``), and the generated ``__hash__`` hashed a 9-tuple each time."""
    audit_caller: tuple[str, str, str, str | None, str | None, str | None] = field(
        init=False, repr=False, compare=False
    )
    """Who the audit records as the caller (client id, subject, token jti, fhirUser, organization, launch
    patient: ``gateway.fhir.audit_events.Caller``), built once per grant: the guard's audit record carries
    this plain tuple of strings instead of the grant, so the record holds nothing the garbage collector
    must follow (``gateway.fhir.guard._audit``)."""

    def __post_init__(self) -> None:
        fields = (self.subject, self.client_id, self.scope, self.token_id, self.expires_at)
        context = (self.patient, self.fhir_user, self.organization, self.encounter)
        object.__setattr__(self, "_hash", hash((*fields, *context)))
        caller = (self.client_id, self.subject, self.token_id, self.fhir_user, self.organization, self.patient)
        object.__setattr__(self, "audit_caller", caller)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Grant], tuple[str | int | None, ...]]:
        """Pickled by its fields: another process hashes strings differently, so the hash is recomputed."""
        fields = (self.subject, self.client_id, self.scope, self.token_id, self.expires_at)
        return Grant, (*fields, self.patient, self.fhir_user, self.organization, self.encounter)

    @staticmethod
    def internal(name: str = "gateway") -> Grant:
        """The gateway's own adapters: everything, as the plan."""
        return Grant(subject=name, client_id=name, scope="system/*.cruds", token_id="internal", expires_at=0)  # noqa: S106 - an id, not a secret
