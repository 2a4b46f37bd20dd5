"""``python -m bench.smart_page_forms`` runs end to end at a tiny size: the provider's page statement is
captured from the gateway, and the forms it is compared with return exactly its rows (the bench checks
that itself; nothing about time is asserted: the figures are in docs/performance.md)."""

from __future__ import annotations

from bench import smart_page_forms


def test_forms_return_the_walks_page() -> None:
    pages = smart_page_forms.main(["--members", "40", "--rounds", "1", "--runs", "2"])
    assert set(pages) == {"none", "walk", "visible index", "members"}
    walk = pages["walk"]
    assert walk == pages["visible index"] == pages["members"]
    # the provider sees a quarter of the members (10 here, 3 Conditions each): a full page, other rows
    assert len(walk) == len(pages["none"]) == 21 and walk != pages["none"]
