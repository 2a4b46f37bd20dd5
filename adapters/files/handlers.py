"""The inbound layouts the plan accepts and the handler that applies each one's rows."""

from __future__ import annotations

from adapters.files.hn_authorizations import HnAuthorizationHandler
from adapters.files.importer import HandlerFactory, RowHandler
from adapters.files.provider_returns import OutreachTrackerHandler, ReturnTransmissionHandler
from gateway.calaim.policy import Policy


def _hn_authorization(policy: Policy, sender: str) -> RowHandler:
    return HnAuthorizationHandler(policy, sender)


def _return_transmission(policy: Policy, sender: str) -> RowHandler:
    return ReturnTransmissionHandler(policy, sender)


def _outreach_tracker(policy: Policy, sender: str) -> RowHandler:
    return OutreachTrackerHandler(policy, sender)


INBOUND: dict[str, HandlerFactory] = {
    "hn-authorization": _hn_authorization,
    "return-transmission": _return_transmission,
    "outreach-tracker": _outreach_tracker,
}
"""Layout id -> handler factory ``(policy, sender) -> RowHandler``."""
