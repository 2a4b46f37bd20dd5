"""Scope parsing and containment of the authorization server (SMART v1 and v2 scopes)."""

from __future__ import annotations

import pytest

from adapters.smart import scopes


@pytest.mark.parametrize(
    ("granted", "requested", "expected"),
    [
        ("patient/*.rs", "patient/Observation.rs", True),
        ("patient/*.rs", "patient/Observation.read", True),
        ("patient/*.read", "patient/Observation.rs", True),
        ("patient/*.rs", "patient/Observation.c", False),
        ("patient/*.cruds", "patient/Observation.write", True),
        ("patient/*.*", "patient/Observation.cruds", True),
        ("patient/Observation.rs", "patient/Condition.rs", False),
        ("user/*.rs", "patient/*.rs", False),
        ("patient/Observation.rs", "patient/Observation.rs?category=laboratory", True),
        ("patient/Observation.rs?category=laboratory", "patient/Observation.rs", False),
        ("patient/Observation.rs?category=laboratory", "patient/Observation.r?category=laboratory", True),
        ("system/*.rs", "system/Patient.s", True),
        ("launch/patient", "launch/patient", True),
        ("launch", "launch/patient", False),
        ("openid", "fhirUser", False),
    ],
)
def test_covers(granted: str, requested: str, expected: bool) -> None:
    assert scopes.covers(granted, requested) is expected


@pytest.mark.parametrize(
    "bad",
    [
        "patient/Observation.sr",
        "patient/Observation.x",
        "nurse/*.rs",
        "patient/*.read?x=1",
        "patient/Obs-1.rs",
        "admin",
    ],
)
def test_invalid(bad: str) -> None:
    assert not scopes.is_valid(bad)


def test_intersect_keeps_request_order_and_drops_unknown() -> None:
    granted = scopes.intersect(
        "openid patient/Observation.rs bogus user/*.rs patient/Observation.rs", "patient/*.rs openid"
    )
    assert granted == "openid patient/Observation.rs"


def test_subset_for_refresh() -> None:
    assert scopes.is_subset("patient/Observation.rs", "patient/*.rs offline_access")
    assert not scopes.is_subset("patient/*.cruds", "patient/*.rs offline_access")
    assert scopes.is_subset("", "patient/*.rs")
