"""Conditional interactions (https://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #cdelete).

Conditional create is race-free by a unique key, not by search-then-insert alone (DESIGN.md choice 3):
the normalized condition is a row of ``conditional_key`` held by the created resource. Two concurrent
creates with the same condition both search, both find nothing, both insert; the second key insert
fails (on PostgreSQL it waits for the first transaction, then violates the key), its transaction
rolls back and the retry finds the winner.

A key outlives its meaning when the holder does not match its own condition (a client may create a
resource that does not match its If-None-Exist): such a key is visible, yet the search finds nothing,
so it is stale and is released. Keys are dropped when their resource is updated or deleted.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

from sqlalchemy import select

from gateway.errors import BadRequest, PreconditionFailed
from gateway.fhir.context import Context
from gateway.store.repository import StoredResource, WriteConflict, WriteTransaction, current_version
from gateway.store.schema import conditional_key
from gateway.types import QueryParams

IGNORED_IN_CONDITIONS = frozenset({"_format", "_pretty", "_summary", "_elements", "_count", "_sort", "_total"})


def parse_condition(text: str) -> QueryParams:
    """The search parameters of an If-None-Exist header or a conditional URL's query."""
    text = text.strip()
    if "?" in text:
        text = text.split("?", 1)[1]
    params = [(k, v) for k, v in parse_qsl(text, keep_blank_values=True) if k not in IGNORED_IN_CONDITIONS]
    if not params:
        raise BadRequest("A conditional request needs search criteria")
    return params


def parse_condition_query(query: QueryParams) -> QueryParams:
    """The search criteria of a conditional update/delete/patch URL (``PUT [type]?criteria``)."""
    params = [(k, v) for k, v in query if k not in IGNORED_IN_CONDITIONS]
    if not params:
        raise BadRequest("A conditional request needs search criteria")
    return params


def condition_key(params: QueryParams) -> str:
    """The uniqueness key of a condition: order-insensitive over parameters."""
    normalized = "&".join(f"{k}={v}" for k, v in sorted(params))
    return hashlib.sha256(normalized.encode()).hexdigest()


def find_one(ctx: Context, tx: WriteTransaction, res_type: str, params: QueryParams) -> StoredResource | None:
    """The single match of a condition, None for no match; 412 for several (http.html#ccreate)."""
    tx.flush()
    narrowing = ctx.narrowing((res_type,), "rs")
    matches = ctx.search.find(tx.conn, resource_type=res_type, params=params, limit=2, narrowing=narrowing)
    if len(matches) > 1:
        raise PreconditionFailed(f"The condition matched more than one {res_type}")
    if not matches:
        return None
    return current_version(tx.conn, res_type, matches[0].res_id, for_update=not ctx.repo.sqlite)


def existing_for_create(
    ctx: Context, tx: WriteTransaction, res_type: str, params: QueryParams
) -> StoredResource | None:
    """The resource a conditional create resolves to, or None when it must create (and claim the key)."""
    found = find_one(ctx, tx, res_type, params)
    if found is not None:
        return found
    key = condition_key(params)
    holder = tx.conn.execute(
        select(conditional_key.c.rid).where(conditional_key.c.res_type == res_type, conditional_key.c.key_hash == key)
    ).first()
    if holder is None:
        return None
    # The key's transaction has committed, so its resource is visible: search again before calling it stale.
    found = find_one(ctx, tx, res_type, params)
    if found is None:
        tx.release_conditional_key(res_type, key)
    return found


def claim(tx: WriteTransaction, res_type: str, params: QueryParams, rid: int) -> None:
    """Hold the condition's key for the new resource ``rid``; a lost race reruns the unit of work."""
    if not tx.claim_conditional_key(res_type, condition_key(params), rid):
        raise WriteConflict("conditional create raced with another create")
