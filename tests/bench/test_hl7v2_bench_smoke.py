"""The HL7 v2 benchmark keeps working: tiny sizes, real processes, no timing asserted."""

from __future__ import annotations

import pytest

from bench import hl7v2

pytestmark = pytest.mark.slow


def test_hl7v2_bench_quick_run() -> None:
    rows = hl7v2.main(["--quick", "--rate", "40"])
    durable = [name for name, *_ in rows if "durable" in name]
    assert len(durable) == 2 and all("errors 0" in name for name in durable)
    cpu = [name for name, *_ in rows if name.startswith("CPU ms per REF^I12")]
    assert len(cpu) == 2 and all("committed in" in name for name in cpu)  # the gateway logged its group sizes
    assert any(name.startswith("ACK latency at 40/s") for name, *_ in rows)


def test_hl7v2_bench_trace_run() -> None:
    """``--trace``: a traced gateway (bench/hl7v2_trace.py) answers as usual and every stage is reported."""
    lines = [line for _, line, *_ in hl7v2.main(["--trace", "--quick", "--rate", "40"])]
    assert "collections by generation" in lines[0]  # the gateway logged its group sizes and collections
    assert lines[1].endswith("messages; ms per stage: mean / p50 / p90 / p99 / max")
    assert int(lines[1].split()[0]) == 20  # every paced message traced through every stage
    assert [line.split()[0] for line in lines[2:5]] == ["total", "to", "worker"]
    assert any(line.startswith("the 10 slowest") for line in lines)


def test_bench_messages_are_distinct_referrals() -> None:
    assert hl7v2.ref_i12(1, "x") != hl7v2.ref_i12(2, "x")
    assert b"REF^I12" in hl7v2.ref_i12(1, "x")


def test_hl7v2_bench_commit_parts() -> None:
    """``--commit-parts``: every part of the commit thread is reported, and the WAL frames per group."""
    lines = [line for _, line, *_ in hl7v2.main(["--commit-parts", "2", "--quick"])]
    assert lines[0].startswith("commit thread CPU per REF^I12, groups of 2 (40 new members")
    assert [line.split()[0] for line in lines[1:3]] == ["commit", "BEGIN"]
    assert lines[-1].startswith("WAL frames per group: median")
