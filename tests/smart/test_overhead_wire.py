"""``python -m bench.smart_overhead --wire`` (reads through uvicorn's HTTP protocol in-process) runs end to
end at a tiny size and every request it times is answered 200 (it asserts nothing about time: the figures
are in docs/performance.md)."""

from __future__ import annotations

from bench import smart_overhead


def test_wire_mode_runs() -> None:
    ratios = smart_overhead.main(["--members", "8", "--requests", "40", "--wire", "--rounds", "2"])
    assert set(ratios) == {
        "read (provider's members) / plan",
        "read (provider's members) / provider",
        "read (patient's own) / patient",
    }
    assert all(ratio > 0 for ratio in ratios.values())


def test_raw_request_carries_the_token_only_when_given() -> None:
    plain = smart_overhead._raw_get("/fhir/Condition/c-1", None)
    assert plain.startswith(b"GET /fhir/Condition/c-1 HTTP/1.1\r\n") and plain.endswith(b"\r\n\r\n")
    assert b"authorization" not in plain.lower()
    assert b"Authorization: Bearer abc\r\n" in smart_overhead._raw_get("/fhir/Condition/c-1", "abc")
