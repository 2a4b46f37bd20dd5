"""The SMART overhead benchmark runs end to end at a tiny size (it asserts nothing about time: the
numbers are in docs/performance.md)."""

from __future__ import annotations

from bench import smart_overhead


def test_smart_overhead_bench_runs() -> None:
    ratios = smart_overhead.main(["--members", "8", "--requests", "40"])
    assert set(ratios) == {
        "read (provider's members) / plan",
        "read (provider's members) / provider",
        "read (patient's own) / patient",
        "search Condition?subject= / plan",
        "search Condition?subject= / provider",
        "search Condition (first page) / plan",
        "search Condition (first page) / provider",
        "search Condition (first page) / patient",
    }
    assert all(ratio > 0 for ratio in ratios.values())
