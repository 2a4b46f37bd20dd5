"""The HL7 v2 benchmark keeps working: tiny sizes, real processes, no timing asserted."""

from __future__ import annotations

import pytest

from bench import hl7v2

pytestmark = pytest.mark.slow


def test_hl7v2_bench_quick_run() -> None:
    rows = hl7v2.main(["--quick", "--rate", "40"])
    assert len(rows) == 3
    assert all("errors 0" in name for name, *_ in rows[:2])


def test_bench_messages_are_distinct_referrals() -> None:
    assert hl7v2.ref_i12(1, "x") != hl7v2.ref_i12(2, "x")
    assert b"REF^I12" in hl7v2.ref_i12(1, "x")
