"""Runtime configuration: the one object that reads the environment.

Every setting can be given as an environment variable prefixed ``CALAIM_`` (for example
``CALAIM_DATABASE_URL``); the CLI flags of ``calaim-gateway serve`` override them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Gateway settings (pydantic-settings; env prefix ``CALAIM_``)."""

    model_config = SettingsConfigDict(env_prefix="CALAIM_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/gateway.db",
        description="SQLAlchemy URL of the store: sqlite:///PATH (embedded default) or postgresql://...",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port.")
    public_base_url: str | None = Field(
        default=None,
        description="Externally visible FHIR base (e.g. https://fhir.example.org/fhir); "
        "default: derived from each request.",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="Largest accepted request body.")
    max_bundle_entries: int = Field(default=5000, gt=0, description="Most entries in one batch/transaction.")
    max_json_depth: int = Field(default=64, gt=0, description="Deepest accepted JSON nesting.")
    validation_workers: int | None = Field(
        default=None,
        ge=0,
        description="Worker processes validating and indexing the resources of large transactions beside them "
        "(gateway/fhir/model_pool.py); default: the CPUs available; 0: validate in the request thread.",
    )
    default_page_size: int = Field(default=20, gt=0, description="Search page size when _count is absent.")
    max_page_size: int = Field(default=1000, gt=0, description="Largest _count honoured.")
    max_include_results: int = Field(
        default=1000, gt=0, description="Most resources added by _include/_revinclude per page."
    )
    sqlite_synchronous: str = Field(
        default="FULL",
        pattern="^(FULL|NORMAL|EXTRA)$",
        description="SQLite PRAGMA synchronous (FULL: a commit survives power loss; NORMAL: survives a process crash).",
    )
    sqlite_wal_autocheckpoint: int = Field(
        default=10_000,
        ge=0,
        description="SQLite PRAGMA wal_autocheckpoint: write-ahead log pages (4 KiB) after which a commit copies the "
        "log back into the database file. SQLite's default, 1,000, checkpoints after nearly every large "
        "transaction and rewrites the same index pages again and again; 0: never (not for production).",
    )
    sqlite_group_commit: int = Field(
        default=32,
        ge=1,
        description="SQLite: most concurrent writers of a process that share one commit (group commit; "
        "each is still answered only after its data is committed). 1: every write commits alone.",
    )
    db_pool_size: int = Field(default=8, gt=0, description="Connections kept per process.")
    db_max_overflow: int = Field(default=8, ge=0, description="Extra connections allowed beyond the pool at peaks.")
    db_pool_timeout_s: float = Field(default=10.0, gt=0, description="Wait for a free connection; then 503.")
    db_lock_timeout_ms: int = Field(
        default=10_000, gt=0, description="Wait for a lock (SQLite: busy timeout); then 503."
    )
    db_statement_timeout_ms: int = Field(default=30_000, gt=0, description="Longest statement on PostgreSQL; then 503.")
    auth_enabled: bool = Field(
        default=True,
        description="Enforce SMART on FHIR access tokens on the FHIR API (off only for development on a "
        "loopback address: `serve --no-auth`).",
    )
    log_level: str = Field(default="info", description="Log level of the gateway and uvicorn.")
    calaim_enabled: bool = Field(
        default=True,
        description="Install the CalAIM workflow (referral intake, closed loop, $decide, $submit, $ecm-activity).",
    )
    calaim_plan_dir: Path | None = Field(
        default=None,
        description="Folder of the plan's configuration (plan.json, organizations.json); "
        "default: profiles/orange-county.",
    )
    # --- county HL7 v2 over MLLP (adapters/hl7v2, docs/hl7v2.md) ---
    mllp_port: int = Field(
        default=0, ge=0, le=65535, description="MLLP listener port for the county's HL7 v2 messages (0: off)."
    )
    mllp_host: str | None = Field(default=None, description="Interface the MLLP listener binds to (default: host).")
    mllp_max_message_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest accepted HL7 v2 message; larger ones are answered AR."
    )
    mllp_max_connections: int = Field(default=64, gt=0, description="Most simultaneous MLLP connections.")
    mllp_idle_timeout_s: float = Field(
        default=0, ge=0, description="Close an MLLP connection idle this long (0: keep it open)."
    )
    hl7v2_county_endpoint: str | None = Field(
        default=None, description="host:port of the county's MLLP listener for outbound RRI^I12 (unset: off)."
    )
    hl7v2_ack_timeout_s: float = Field(default=10.0, gt=0, description="Wait this long for the county's ACK.")
    hl7v2_application: str = Field(default="CALAIM-GATEWAY", description="MSH-3 of messages the gateway sends.")
    hl7v2_facility: str = Field(default="CALOPTIMA", description="MSH-4 of messages the gateway sends.")
    hl7v2_county_application: str = Field(default="HCA-BHS", description="MSH-5 of messages sent to the county.")
    hl7v2_county_facility: str = Field(default="OCHCA", description="MSH-6 of messages sent to the county.")
    hl7v2_county_organization: str = Field(
        default="county-hca-bhs", description="Organization id of the county (plan organizations.json)."
    )
    hl7v2_processing_id: str = Field(
        default="P", pattern="^[PTD]$", description="MSH-11 accepted and sent (P production, T training, D debug)."
    )
    hl7v2_identifier_base: str = Field(
        default="https://fhir.calaim-gateway.org/sid/county-hca-bhs",
        description="Base of the identifier systems of county MRNs (/mrn), referral ids and visit numbers.",
    )
    hl7v2_time_zone: str = Field(
        default="America/Los_Angeles", description="Time zone of v2 times sent without an offset."
    )
    # --- SMART on FHIR authorization server (adapters/smart, docs/smart.md) ---
    smart_signing_key_file: Path | None = Field(
        default=None,
        description="PEM private key (RSA: RS256, EC P-256: ES256) that signs OpenID Connect id tokens "
        "(access tokens are opaque handles); default: an RSA key generated on first use and kept in the database "
        "(shared by all processes).",
    )
    smart_access_token_lifetime_s: int = Field(
        default=3600, gt=0, le=86_400, description="Lifetime of access tokens of app launches (seconds)."
    )
    smart_backend_token_lifetime_s: int = Field(
        default=300, gt=0, le=300, description="Lifetime of SMART Backend Services access tokens (at most 300 s)."
    )
    smart_offline_refresh_lifetime_s: int = Field(
        default=30 * 86_400, gt=0, description="Lifetime of refresh tokens granted with offline_access (seconds)."
    )
    smart_online_refresh_lifetime_s: int = Field(
        default=12 * 3600, gt=0, description="Lifetime of refresh tokens granted with online_access (seconds)."
    )
    smart_code_lifetime_s: int = Field(
        default=60, gt=0, le=600, description="Lifetime of authorization codes (single use; seconds)."
    )
    smart_launch_lifetime_s: int = Field(
        default=300, gt=0, le=3600, description="Lifetime of EHR launch contexts (single use; seconds)."
    )
    smart_session_lifetime_s: int = Field(
        default=8 * 3600, gt=0, description="Lifetime of the login session cookie of the authorization pages."
    )
    smart_login_max_failures: int = Field(
        default=5, gt=0, description="Failed logins in a row that lock a user account."
    )
    smart_login_lockout_s: int = Field(
        default=15 * 60, gt=0, description="How long a locked user account stays locked (seconds)."
    )
    smart_revocation_recheck_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="A process re-checks the revocation of a cached access token after this many seconds: "
        "the bound on how late a revocation made by another process takes effect.",
    )
    smart_jwks_cache_s: int = Field(
        default=300, ge=0, description="How long a backend client's JWKS fetched from its jwks_url is cached."
    )
    smart_jwks_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of fetching a backend client's JWKS from its jwks_url."
    )
    # --- HN file exchange (adapters/files, docs/files.md) ---
    files_root: Path | None = Field(
        default=None,
        description="Drop-directory root of the file exchange (<root>/<org>/inbox|outbox|archive|rejected); "
        "unset: no file watcher, schedule or SFTP endpoint runs with the server.",
    )
    files_max_bytes: int = Field(
        default=1024 * 1024 * 1024, gt=0, description="Largest inbound file accepted (larger ones are refused)."
    )
    files_chunk_rows: int = Field(
        default=1000, gt=0, le=100_000, description="Inbound rows committed per transaction (with the file position)."
    )
    files_poll_s: float = Field(default=5.0, gt=0, description="How often the inboxes are scanned (seconds).")
    files_settle_s: float = Field(
        default=2.0, ge=0, description="An inbox file is taken once unchanged (size, mtime) for this long (seconds)."
    )
    files_daily_at: str = Field(
        default="06:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time after which the daily files (reconciliation) of the day are produced.",
    )
    files_weekly_day: int = Field(
        default=0, ge=0, le=6, description="Weekday (0 Monday) on which the weekly ECM activity log is produced."
    )
    files_sftp_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port of the gateway's own SFTP endpoint (unset: off)."
    )
    files_sftp_host: str = Field(default="127.0.0.1", description="Interface the SFTP endpoint binds to.")
    files_sftp_host_key: Path | None = Field(
        default=None, description="SSH host key (OpenSSH private key) of the SFTP endpoint (required to run it)."
    )
    files_sftp_authorized_keys: Path | None = Field(
        default=None,
        description="Folder of <org id>.pub files: the OpenSSH public keys each party logs in with "
        "(the user name is the Organization id; it sees only its own folder).",
    )
    # --- outbox retention and dead letters (gateway/store/outbox_retention.py, dead_letters.py, docs/outbox.md) ---
    outbox_retention_days: int = Field(
        default=30,
        ge=0,
        description="Delivered outbox events older than this are purged (days; 0: keep them forever). "
        "Pending, dead and not-yet-written file events are never purged.",
    )
    outbox_purge_interval_s: float = Field(
        default=3600.0, gt=0, description="How often each process tries to run the purge (one at a time, seconds)."
    )
    outbox_max_attempts: int = Field(
        default=25,
        ge=0,
        description="Failed delivery attempts after which an outbox event is parked as dead (about an hour of "
        "retries with the backoff; 0: retry forever). List and requeue with `calaim-gateway outbox`.",
    )
    # --- audit trail (gateway/fhir/audit.py, docs/access-control.md "Audit") ---
    audit_flush_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often recorded accesses are written to the audit log (seconds): the most a crash "
        "of a process can lose.",
    )
    audit_materialize_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the audit log is turned into AuditEvents (seconds); an auditor's AuditEvent "
        "read or search does it at once.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
