"""Tables of the resource store (SQLAlchemy Core; one schema for SQLite and PostgreSQL).

Layout (DESIGN.md "store raw JSON plus search-index rows plus a history table"):

- ``resource``: the current version of every resource, as the exact JSON bytes served on read.
  ``rid`` is an internal surrogate key that never changes for a (type, id); index rows point at it.
- ``resource_version``: every version ever written (the current one too), for vread and _history;
  ``hseq`` orders the whole history of the server (system-level history, keyset paging).
- ``idx_*``: one table per search parameter type, rows extracted from the current version only.
  Dates are stored as ranges of microseconds since the Unix epoch (UTC), so every FHIR precision
  ("2024", "2024-05", an instant) becomes a closed interval [low, high] and the prefixes of
  https://hl7.org/fhir/R4/search.html#prefix compare ranges.
- Each index table has a value index ending in ``rid`` (the search reads rids from the index alone) and a
  per-resource index starting with ``rid`` (deletes on update, includes, sorting, ``:missing``).
- ``conditional_key``: uniqueness of conditional creates (type + normalized If-None-Exist query),
  so two concurrent creates with the same condition cannot both insert (DESIGN.md choice 3).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),  # microseconds since epoch, UTC
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=True),  # NULL while deleted
    UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
)
Index("ix_resource_type_rid", resource.c.res_type, resource.c.rid)
Index("ix_resource_type_updated", resource.c.res_type, resource.c.last_updated, resource.c.rid)

resource_version = Table(
    "resource_version",
    metadata,
    Column("hseq", RowId, primary_key=True, autoincrement=True),
    Column("rid", RowId, ForeignKey("resource.rid"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),  # POST, PUT, PATCH, DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=True),
    UniqueConstraint("res_type", "res_id", "version_id", name="uq_version"),
)
Index("ix_version_type_hseq", resource_version.c.res_type, resource_version.c.hseq)
Index("ix_version_rid_hseq", resource_version.c.rid, resource_version.c.hseq)


def _index_table(name: str, *columns: Column[object]) -> Table:
    """An index table: (rid, res_type, param) plus the value columns of its search type."""
    return Table(
        name,
        metadata,
        Column("rid", RowId, ForeignKey("resource.rid"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
    )


idx_token = _index_table(
    "idx_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),  # normalized display/text, for :text
)
Index("ix_token_value", idx_token.c.res_type, idx_token.c.param, idx_token.c.code, idx_token.c.system, idx_token.c.rid)
Index("ix_token_rid", idx_token.c.rid, idx_token.c.param, idx_token.c.code)

idx_string = _index_table(
    "idx_string",
    Column("value", Text, nullable=False),  # normalized: case- and accent-folded
    Column("exact", Text, nullable=False),  # as written, for :exact
)
Index("ix_string_value", idx_string.c.res_type, idx_string.c.param, idx_string.c.value, idx_string.c.rid)
Index("ix_string_rid", idx_string.c.rid, idx_string.c.param, idx_string.c.value)

idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
)
Index("ix_date_value", idx_date.c.res_type, idx_date.c.param, idx_date.c.low, idx_date.c.high, idx_date.c.rid)
Index("ix_date_rid", idx_date.c.rid, idx_date.c.param, idx_date.c.low, idx_date.c.high)

idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=True),  # absolute or canonical references, as written
    Column("identifier_system", Text, nullable=True),  # Reference.identifier, for :identifier
    Column("identifier_value", Text, nullable=True),
)
Index(
    "ix_reference_target",
    idx_reference.c.res_type,
    idx_reference.c.param,
    idx_reference.c.target_id,
    idx_reference.c.target_type,
    idx_reference.c.rid,
)
Index("ix_reference_reverse", idx_reference.c.target_type, idx_reference.c.target_id)
Index(
    "ix_reference_rid",
    idx_reference.c.rid,
    idx_reference.c.param,
    idx_reference.c.target_type,
    idx_reference.c.target_id,
)

idx_uri = _index_table("idx_uri", Column("value", Text, nullable=False))
Index("ix_uri_value", idx_uri.c.res_type, idx_uri.c.param, idx_uri.c.value, idx_uri.c.rid)
Index("ix_uri_rid", idx_uri.c.rid, idx_uri.c.param)

idx_number = _index_table(
    "idx_number",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
)
Index("ix_number_value", idx_number.c.res_type, idx_number.c.param, idx_number.c.low, idx_number.c.rid)
Index("ix_number_rid", idx_number.c.rid, idx_number.c.param, idx_number.c.low)

idx_quantity = _index_table(
    "idx_quantity",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("unit", Text, nullable=True),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
)
Index(
    "ix_quantity_value",
    idx_quantity.c.res_type,
    idx_quantity.c.param,
    idx_quantity.c.code,
    idx_quantity.c.low,
    idx_quantity.c.rid,
)
Index("ix_quantity_rid", idx_quantity.c.rid, idx_quantity.c.param)

INDEX_TABLES: dict[str, Table] = {
    "token": idx_token,
    "string": idx_string,
    "date": idx_date,
    "reference": idx_reference,
    "uri": idx_uri,
    "number": idx_number,
    "quantity": idx_quantity,
}
"""Index table per FHIR search parameter type (https://hl7.org/fhir/R4/search.html#ptypes)."""

conditional_key = Table(
    "conditional_key",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("rid", RowId, ForeignKey("resource.rid"), nullable=False),
    PrimaryKeyConstraint("res_type", "key_hash", name="pk_conditional_key"),
)
Index("ix_conditional_key_rid", conditional_key.c.rid)

outbox = Table(
    "outbox",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("topic", String(64), nullable=False),  # e.g. hl7v2.rri, hn.reconciliation
    Column("dedupe_key", String(200), nullable=True),  # one event per change: unique within a topic
    Column("payload", LargeBinary, nullable=False),  # JSON; never logged
    Column("created_at", BigInteger, nullable=False),  # microseconds since epoch
    Column("available_at", BigInteger, nullable=False),  # not before: backoff after a failed attempt
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", BigInteger, nullable=True),  # a lease: another worker may take it after this
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),  # the receiver's answer or error class; no PHI
    UniqueConstraint("topic", "dedupe_key", name="uq_outbox_dedupe"),
)
Index("ix_outbox_pending", outbox.c.topic, outbox.c.delivered_at, outbox.c.available_at, outbox.c.id)
"""The transactional outbox (DESIGN.md choice 4): events written in the same transaction as the change
that causes them, delivered by workers that claim them with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so two instances never deliver one event at the same time and a crash loses none."""

lease = Table(
    "lease",
    metadata,
    Column("name", String(64), primary_key=True),  # e.g. mllp-listener, file-schedule
    Column("holder", String(200), nullable=False),  # the instance holding it (host:pid:random)
    Column("expires_at", BigInteger, nullable=False),  # microseconds since epoch; free after this
)
"""Named leadership on SQLite (``gateway/store/leases.py``): one row per lease, taken under ``BEGIN
IMMEDIATE`` when absent or expired. PostgreSQL uses session advisory locks instead and leaves it empty."""
