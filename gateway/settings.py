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
    db_pool_size: int = Field(default=8, gt=0, description="Connections kept per process.")
    db_max_overflow: int = Field(default=8, ge=0, description="Extra connections allowed beyond the pool at peaks.")
    db_pool_timeout_s: float = Field(default=10.0, gt=0, description="Wait for a free connection; then 503.")
    db_lock_timeout_ms: int = Field(
        default=10_000, gt=0, description="Wait for a lock (SQLite: busy timeout); then 503."
    )
    db_statement_timeout_ms: int = Field(default=30_000, gt=0, description="Longest statement on PostgreSQL; then 503.")
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
