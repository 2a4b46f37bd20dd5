"""Which referrals are the county's (gateway/calaim/county.py): the one rule the workflow applies when it
writes an event for the county's RRI and the RRI sender applies again when it delivers
(adapters/hl7v2/outbound.py ``RriSender.is_county_referral``)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.hl7v2.config import mapping_config
from gateway.calaim.county import County, is_county_referral
from gateway.calaim.policy import Policy
from gateway.settings import Settings

COUNTY = County("county-hca-bhs", "https://fhir.calaim-gateway.org/sid/county-hca-bhs/referral-id")


def _org(org_id: str) -> dict[str, str]:
    return {"reference": f"Organization/{org_id}"}


@pytest.mark.parametrize(
    ("referral", "county"),
    [
        ({"identifier": [{"system": COUNTY.referral_id_system, "value": "CR-1"}]}, True),  # came in over v2
        ({"requester": _org("county-hca-bhs")}, True),
        ({"requester": {"reference": "https://example.org/fhir/Organization/county-hca-bhs"}}, True),  # absolute
        ({"requester": _org("hn-altamed"), "performer": [_org("hn-altamed"), _org("county-hca-bhs")]}, True),
        ({"requester": _org("hn-altamed"), "performer": [_org("ecm-libertana")]}, False),
        ({"identifier": [{"system": "https://fhir.calaim-gateway.org/sid/referral-id", "value": "hn-1"}]}, False),
        ({"requester": {"reference": "Practitioner/county-hca-bhs"}}, False),  # not the Organization
        ({"identifier": ["not an identifier"], "performer": None}, False),
        ({}, False),
        (None, False),
    ],
)
def test_the_rule(referral: dict[str, Any] | None, county: bool) -> None:
    assert is_county_referral(referral, COUNTY) is county


def test_the_county_of_the_settings_is_the_mappings_county() -> None:
    """``County.of`` names the county as the HL7 v2 mappings do (``mapping_config``), also with another
    base and organization configured."""
    for settings in (
        Settings(),
        Settings(hl7v2_identifier_base="https://ids.example.org/county/", hl7v2_county_organization="county-x"),
    ):
        config = mapping_config(settings, Policy.load())
        assert County.of(settings) == County(config.county_organization, config.referral_id_system)
