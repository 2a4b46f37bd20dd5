"""Bulk lookups of stored resources for a chunk of file rows (issue 6): the workflow's own
(``gateway.calaim.lookups``), which the batched referral intake shares."""

from __future__ import annotations

from gateway.calaim.lookups import IN_LIMIT, Found, by_id, by_reference, by_token

__all__ = ["IN_LIMIT", "Found", "by_id", "by_reference", "by_token"]
