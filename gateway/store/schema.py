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
- A resource's own rows (versions, index rows, keys) carry its ``rid`` without a foreign key: only
  ``WriteTransaction`` writes them, in the transaction of the resource row, and no ``resource`` row is ever
  deleted; the constraint cost every inserted row a look-up (migration 0014, docs/scaling.md "Foreign
  keys"), and ``tests/store/test_orphans.py`` checks that no row outlives or precedes its resource.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
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

from gateway.store.date_spans import SPAN_CLASS_SQL

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
    Column("rid", RowId, nullable=False),
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
        Column("rid", RowId, nullable=False),
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
# text_pattern_ops on PostgreSQL: a collation other than C cannot answer LIKE 'prefix%' from a plain b-tree
# (migration 0009; gateway/search/driven.py). SQLite compares bytewise and ignores the option.
Index(
    "ix_string_value",
    idx_string.c.res_type,
    idx_string.c.param,
    idx_string.c.value,
    idx_string.c.rid,
    postgresql_ops={"value": "text_pattern_ops"},
)
Index("ix_string_rid", idx_string.c.rid, idx_string.c.param, idx_string.c.value)

idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    # Computed by the database from the row (gateway/store/date_spans.py): what bounds a date-range scan.
    # Virtual on SQLite, stored on PostgreSQL (migration 0008).
    Column("span_class", Integer, Computed(SPAN_CLASS_SQL), nullable=True),
)
Index(
    "ix_date_span",
    idx_date.c.res_type,
    idx_date.c.param,
    idx_date.c.span_class,
    idx_date.c.low,
    idx_date.c.high,
    idx_date.c.rid,
)
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

# Membership as index data (gateway/search/membership.py; docs/access-control.md "How narrowing is built"):
# one row per (organization, patient) pair a ServiceRequest, Task or Coverage makes, written and dropped
# with the resource's other index rows. ``res_type`` is the route (a provider's view skips Coverage).
idx_member = Table(
    "idx_member",
    metadata,
    Column("rid", RowId, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("organization", String(64), nullable=False),
    Column("patient", String(64), nullable=False),
)
Index("ix_member_organization", idx_member.c.organization, idx_member.c.patient, idx_member.c.res_type)
Index("ix_member_rid", idx_member.c.rid)

conditional_key = Table(
    "conditional_key",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("rid", RowId, nullable=False),
    PrimaryKeyConstraint("res_type", "key_hash", name="pk_conditional_key"),
)
Index("ix_conditional_key_rid", conditional_key.c.rid)

REWRITTEN_TABLES: tuple[Table, ...] = (*INDEX_TABLES.values(), idx_member, conditional_key)
"""The tables whose rows of a ``rid`` belong to its current version: dropped when it is updated or deleted
(gateway/store/repository.py ``_rewrite_current``, gateway/store/pg_bulk.py)."""

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
    Column("dead_at", BigInteger, nullable=True),  # parked after the last allowed attempt (0007; see the end)
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

# --- SMART on FHIR authorization server (adapters/smart; migration 0003) -------------------------------
# Secrets are never stored: client secrets and passwords as argon2 hashes, codes, refresh tokens, launch
# ids and session ids as SHA-256 hex digests. Times are seconds since the epoch (JWT NumericDate).

smart_client = Table(
    "smart_client",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("auth_method", String(32), nullable=False),  # none | client_secret | private_key_jwt
    Column("secret_hash", String(200), nullable=True),  # argon2 (client_secret_basic / _post)
    Column("redirect_uris", Text, nullable=False),  # JSON list; exact match
    Column("scope", Text, nullable=False),  # registered scopes, space-separated
    Column("jwks", Text, nullable=True),  # JSON Web Key Set (private_key_jwt)
    Column("jwks_url", String(2000), nullable=True),
    Column("organization", String(64), nullable=True),  # Organization id a backend client acts for
    Column("created_at", BigInteger, nullable=False),
)

smart_user = Table(
    "smart_user",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("password_hash", String(200), nullable=False),  # argon2
    Column("organization", String(64), nullable=False),  # Organization id the user acts for
    Column("fhir_user", String(200), nullable=True),  # e.g. Practitioner/p-1
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
)

smart_session = Table(
    "smart_session",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("username", String(200), ForeignKey("smart_user.username"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("auth_time", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

smart_launch = Table(
    "smart_launch",
    metadata,
    Column("launch_hash", String(64), primary_key=True),
    Column("created_by", String(200), nullable=False),  # the EHR's client id
    Column("client_id", String(200), nullable=True),  # the app it is for (None: any client)
    Column("context", Text, nullable=False),  # JSON: patient, encounter, fhirUser
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
)

smart_auth_code = Table(
    "smart_auth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(64), nullable=False),  # every token issued from this code carries it
    Column("client_id", String(200), nullable=False),
    Column("username", String(200), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("scope", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),  # S256 only
    Column("nonce", String(500), nullable=True),
    Column("auth_time", BigInteger, nullable=False),
    Column("context", Text, nullable=False),  # JSON launch context
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
)

smart_refresh_token = Table(
    "smart_refresh_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(64), nullable=False),  # the rotation family
    Column("client_id", String(200), nullable=False),
    Column("username", String(200), nullable=False),
    Column("scope", Text, nullable=False),
    Column("context", Text, nullable=False),  # JSON launch context
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("rotated_at", BigInteger, nullable=True),  # replaced by a newer token of the family
    Column("revoked", Boolean, nullable=False, default=False),
)
Index("ix_smart_refresh_token_grant", smart_refresh_token.c.grant_id)

smart_access_token = Table(
    "smart_access_token",
    metadata,
    Column("jti", String(64), primary_key=True),  # SHA-256 hex of the token (a random handle), never the token
    Column("grant_id", String(64), nullable=True),  # code/refresh family; None for backend services
    Column("client_id", String(200), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("scope", Text, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    # What the verifier turns the handle into (migration 0015); empty on JWT-era rows, which are refused.
    Column("audience", Text, nullable=True),  # the FHIR base: the token's iss and aud
    Column("patient", String(200), nullable=True),
    Column("encounter", String(200), nullable=True),
    Column("fhir_user", String(200), nullable=True),
    Column("organization", String(200), nullable=True),
)
Index("ix_smart_access_token_grant", smart_access_token.c.grant_id)
Index("ix_smart_access_token_expires", smart_access_token.c.expires_at)

smart_assertion_jti = Table(
    "smart_assertion_jti",
    metadata,
    Column("client_id", String(200), nullable=False),
    Column("jti", String(200), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("client_id", "jti", name="pk_smart_assertion_jti"),
)
"""Client assertion ``jti`` values already accepted: the primary key refuses a replay, even between
processes (SMART Backend Services; RFC 7523 section 3 item 7)."""

smart_signing_key = Table(
    "smart_signing_key",
    metadata,
    Column("name", String(64), primary_key=True),  # "access-token": the one active key
    Column("kid", String(100), nullable=False),
    Column("alg", String(16), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
"""The server's signing key, generated by the first process that needs it (the primary key makes
concurrent first uses agree on one key)."""
# --- end SMART ---------------------------------------------------------------------------------------------

# --- HN file exchange (issue 6; adapters/files, docs/files.md) -------------------------------------------

file_inbound = Table(
    "file_inbound",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("sender", String(64), nullable=False),  # Organization id of the sender (drop folder, SFTP user)
    Column("layout", String(64), nullable=False),  # layout id of the header, e.g. hn-authorization
    Column("name", String(255), nullable=False),  # file name as received (no directories)
    Column("sha256", String(64), nullable=False),  # of the whole file: the same file twice is one entry
    Column("size", BigInteger, nullable=False),
    Column("sequence", Integer, nullable=True),  # header sequence number
    Column("status", String(16), nullable=False),  # importing, done, rejected
    Column("position", Integer, nullable=False, default=0),  # last line whose row is committed
    Column("rows_read", Integer, nullable=False, default=0),
    Column("rows_applied", Integer, nullable=False, default=0),
    Column("rows_unchanged", Integer, nullable=False, default=0),
    Column("rows_rejected", Integer, nullable=False, default=0),
    Column("received_at", BigInteger, nullable=False),  # microseconds since epoch
    Column("finished_at", BigInteger, nullable=True),
    UniqueConstraint("sender", "sha256", name="uq_file_inbound_digest"),
)
"""The inbound file ledger: one row per distinct file of a sender. ``position`` advances in the same
transaction as the rows it covers, so a restart resumes after the last committed row (exactly once)."""

file_row_error = Table(
    "file_row_error",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("file_id", RowId, ForeignKey("file_inbound.id"), nullable=False),
    Column("row_no", Integer, nullable=False),  # line in the file (1 = header)
    Column("column_name", String(64), nullable=False),  # empty: the whole record
    Column("code", String(32), nullable=False),  # error-report layout CODE
    Column("reason", Text, nullable=False),  # never the value itself (PHI)
)
Index("ix_file_row_error_file", file_row_error.c.file_id, file_row_error.c.row_no)
"""Problems of inbound rows, committed with the chunk they belong to; the error report is written from here."""

file_outbound = Table(
    "file_outbound",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),  # layout id, e.g. authorization-reconciliation
    Column("recipient", String(64), nullable=False),  # Organization id
    Column("period", String(16), nullable=False),  # the day, week ending or month the file is for
    Column("sequence", Integer, nullable=False),  # per kind and recipient, from 1
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # writing, written
    Column("rows", Integer, nullable=False, default=0),
    Column("sha256", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("written_at", BigInteger, nullable=True),
    UniqueConstraint("kind", "recipient", "sequence", name="uq_file_outbound_sequence"),
)
Index("ix_file_outbound_period", file_outbound.c.kind, file_outbound.c.recipient, file_outbound.c.period)
"""Outbound files: recorded (status writing) before the file is written, so a crash rewrites the same file
with the same sequence instead of producing a second one."""

file_outbound_event = Table(
    "file_outbound_event",
    metadata,
    Column("outbox_id", RowId, primary_key=True),  # outbox.id: an event is in at most one file
    Column("file_id", RowId, ForeignKey("file_outbound.id"), nullable=False),
)
Index("ix_file_outbound_event_file", file_outbound_event.c.file_id)
"""Which outbox events a reconciliation file carries (recorded with the file, before it is written)."""

file_record = Table(
    "file_record",
    metadata,
    Column("layout", String(64), nullable=False),
    Column("sender", String(64), nullable=False),
    Column("record_key", String(100), nullable=False),  # the layout's key, e.g. the authorization number
    Column("digest", String(64), nullable=False),  # of the record's typed values
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),  # the version the record produced (or found unchanged)
    PrimaryKeyConstraint("layout", "sender", "record_key", name="pk_file_record"),
)
"""The last record applied per key, written with its row: a later record with the same digest whose
resource is still at that version is unchanged without reading the resource (the re-import fast path)."""
# --- end HN file exchange ----------------------------------------------------------------------------------

# --- County HL7 v2 (adapters/hl7v2; migration 0005) ---------------------------------------------------------

hl7v2_message = Table(
    "hl7v2_message",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("direction", String(3), nullable=False),  # in | out
    Column("sender", String(200), nullable=False),  # MSH-3|MSH-4 as sent ("" when the MSH was unreadable)
    Column("control_id", String(200), nullable=True),  # MSH-10 (NULL when unreadable)
    Column("message_type", String(20), nullable=False),  # e.g. REF^I12
    Column("status", String(8), nullable=False),  # in: AA | AE | AR; out: pending | AA | AE | AR | error
    Column("received_at", BigInteger, nullable=False),  # first receipt / first send, microseconds since epoch
    Column("updated_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=1),  # receipts (in) or sends (out)
    Column("charset", String(32), nullable=True),  # MSH-18 as sent
    Column("raw", LargeBinary, nullable=False),  # the message bytes as received/sent: PHI, never logged
    Column("ack", LargeBinary, nullable=True),  # the ACK sent (in) or received (out)
    Column("error", Text, nullable=True),  # PHI-free summary, e.g. "AE 101 PID^1^5"
    Column("resources", Text, nullable=True),  # JSON list of Type/id the message wrote
    Column("outbox_id", BigInteger, nullable=True),  # out: the outbox event delivered
    UniqueConstraint("direction", "sender", "control_id", name="uq_hl7v2_message_key"),
)
Index("ix_hl7v2_message_time", hl7v2_message.c.direction, hl7v2_message.c.received_at)
Index("ix_hl7v2_message_status", hl7v2_message.c.direction, hl7v2_message.c.status, hl7v2_message.c.id)
"""The HL7 v2 message log: every inbound message (raw, with its ACK) and every outbound RRI. The unique
key (direction, sender, MSH-10) makes inbound processing exactly-once: the row of an applied message
commits in the transaction of the resources it produced, and a resend finds it (DESIGN.md choice 3)."""
# --- end county HL7 v2 ----------------------------------------------------------------------------------------

# --- Outbox retention and dead letters (gateway/store/outbox_retention.py, dead_letters.py; migration 0007) ---

Index(
    "ix_outbox_dead",
    outbox.c.topic,
    outbox.c.id,
    sqlite_where=outbox.c.dead_at.is_not(None),
    postgresql_where=outbox.c.dead_at.is_not(None),
)
"""Dead events only (a partial index: free for the live queue): ``calaim-gateway outbox dead`` and requeue.
Dead events also get ``available_at`` far in the future, so they leave the range the claim scans in
``ix_outbox_pending``. Delivered events are purged in id order (the primary key), so retention needs no index."""
# --- end outbox retention ---------------------------------------------------------------------------------

# --- Audit log (issue 5; gateway/fhir/audit_log.py, docs/access-control.md; migrations 0006, 0010) ----------

audit_log_batch = Table(
    "audit_log_batch",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("recorded", BigInteger, nullable=False),  # microseconds since epoch: the batch's first access
    Column("count", Integer, nullable=False),  # accesses in the batch
    Column("body", Text, nullable=False),  # JSON: {"callers": [...], "accesses": [...]} (audit_events.encode_batch)
    sqlite_autoincrement=True,  # ids never reused: the materialization mark stays valid
)
"""Append-only: one row per batch of guarded accesses as the audit writer flushed them (no bodies of
resources; the accesses as compact JSON), materialized into AuditEvents past ``audit_log_mark``. One
row per batch instead of one per access: the writer's CPU per access is a quarter (docs/performance.md)."""

audit_log_mark = Table(
    "audit_log_mark",
    metadata,
    Column("name", String(64), primary_key=True),  # "AuditEvent"
    Column("last_id", BigInteger, nullable=False),  # the last audit_log_batch.id already in AuditEvents
)
"""How far the audit log has been materialized into AuditEvents; advanced in the transaction that
creates them (exactly once per access)."""
# --- end audit log ------------------------------------------------------------------------------------------
