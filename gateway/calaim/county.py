"""Which referrals are the county's (REFERENCE.md §7; docs/hl7v2.md "RRI^I12 out").

Only a county referral produces an RRI^I12 to the county: one that came in over HL7 v2 (it carries the
county's referral id, ``<CALAIM_HL7V2_IDENTIFIER_BASE>/referral-id``), or whose requester or performer is
the county Organization (``CALAIM_HL7V2_COUNTY_ORGANIZATION``). The workflow asks this when it writes an
event (``gateway.calaim.events``: the ``hl7v2`` queues get only county referrals' events) and the RRI
sender asks it again when it delivers (``adapters/hl7v2/outbound.py``, a defence), so both use this one rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.calaim.resources import ref_id
from gateway.settings import Settings
from gateway.types import JSONObject


@dataclass(frozen=True, slots=True)
class County:
    """The county as referrals name it: its Organization id and the identifier system of its referral ids."""

    organization: str
    referral_id_system: str

    @classmethod
    def of(cls, settings: Settings) -> County:
        """The county of ``settings`` (the systems ``adapters/hl7v2/config.mapping_config`` gives the mappings)."""
        base = settings.hl7v2_identifier_base.rstrip("/")
        return cls(settings.hl7v2_county_organization, f"{base}/referral-id")


def is_county_referral(referral: JSONObject | None, county: County) -> bool:
    """Whether ``referral`` (a ServiceRequest's JSON) is the county's: it carries the county's referral id,
    or its requester or one of its performers is the county Organization. A pure function of the JSON."""
    if not referral:
        return False
    for identifier in referral.get("identifier") or ():
        if isinstance(identifier, dict) and identifier.get("system") == county.referral_id_system:
            return True
    return _names(referral.get("requester"), county.organization) or any(
        _names(p, county.organization) for p in referral.get("performer") or ()
    )


def _names(ref: object, organization: str) -> bool:
    """Whether ``ref`` is a literal Reference to ``Organization/<organization>`` (``resources.ref_id``: relative
    or absolute, with or without ``_history``); the usual miss is one substring test (the hot path of a file
    of HN referrals)."""
    text = ref.get("reference") if isinstance(ref, dict) else ref
    return isinstance(text, str) and organization in text and ref_id(text, "Organization") == organization
