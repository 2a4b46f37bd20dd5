"""The admin CLI (``calaim-gateway clients add``, ``users add``, run as real subprocesses) and the login
page: argon2 hashes, one generic message for unknown users and wrong passwords, lockout after repeated
failures, CSRF on the login form, session cookie flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from adapters.smart.registry import get_client, get_user
from gateway.settings import Settings
from gateway.store.schema import smart_client, smart_user
from tests.smart.support import (
    PASSWORD,
    authorize_url,
    es384_key,
    forms,
    pkce,
    public_jwks,
    register_app,
    register_staff,
    submit,
)

CLI = [sys.executable, "-m", "gateway.cli"]


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_cli_registers_clients_and_users(database_url: str, engine: Engine, tmp_path: Path) -> None:
    db = ["--database-url", database_url]
    public = _run(
        "clients",
        "add",
        "--client-id",
        "app",
        "--redirect-uri",
        "https://a.example.org/cb",
        "--redirect-uri",
        "http://127.0.0.1:9000/cb",
        "--scope",
        "launch/patient patient/*.rs",
        "--public",
        *db,
    )
    assert public.returncode == 0, public.stderr
    secret = _run(
        "clients", "add", "--client-id", "ehr", "--scope", "launch", "--secret-stdin", *db, stdin="s3cret-value\n"
    )
    assert secret.returncode == 0, secret.stderr
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(es384_key())))
    backend = _run(
        "clients",
        "add",
        "--client-id",
        "hn",
        "--scope",
        "system/*.rs",
        "--jwks-file",
        str(jwks_file),
        "--organization",
        "Organization/hn-noble",
        *db,
    )
    assert backend.returncode == 0, backend.stderr
    user = _run(
        "users",
        "add",
        "--username",
        "nurse",
        "--password-stdin",
        "--organization",
        "Organization/hn-altamed",
        "--fhir-user",
        "Practitioner/p-1",
        *db,
        stdin="long enough pw\n",
    )
    assert user.returncode == 0, user.stderr

    app = get_client(engine, "app")
    assert app is not None and app.auth_method == "none"
    assert app.redirect_uris == ("https://a.example.org/cb", "http://127.0.0.1:9000/cb")
    ehr = get_client(engine, "ehr")
    assert ehr is not None and ehr.check_client_secret("s3cret-value") and not ehr.check_client_secret("other")
    hn = get_client(engine, "hn")
    assert hn is not None and hn.auth_method == "private_key_jwt" and hn.organization == "hn-noble"
    assert get_user(engine, "nurse") == get_user(engine, "nurse")
    stored_user = get_user(engine, "nurse")
    assert stored_user is not None and (stored_user.organization, stored_user.fhir_user) == (
        "hn-altamed",
        "Practitioner/p-1",
    )
    with engine.connect() as conn:
        secret_hash = conn.execute(select(smart_client.c.secret_hash).where(smart_client.c.client_id == "ehr")).scalar()
        password_hash = conn.execute(select(smart_user.c.password_hash)).scalar()
    assert str(secret_hash).startswith("$argon2id$") and "s3cret" not in str(secret_hash)
    assert str(password_hash).startswith("$argon2id$")


def test_cli_refuses_bad_registrations(database_url: str) -> None:
    db = ["--database-url", database_url]
    both = _run(
        "clients", "add", "--client-id", "x", "--scope", "openid", "--public", "--secret-stdin", *db, stdin="s\n"
    )
    assert both.returncode != 0 and "exactly one" in both.stderr
    bad_scope = _run("clients", "add", "--client-id", "x", "--scope", "patient/Observation.bogus", "--public", *db)
    assert bad_scope.returncode != 0 and "unknown scopes" in bad_scope.stderr

    def add_user(organization: str) -> subprocess.CompletedProcess[str]:
        args = ("users", "add", "--username", "u", "--password-stdin", "--organization", organization, *db)
        return _run(*args, stdin="long enough pw\n")

    bad_org = add_user("Practitioner/1")
    assert bad_org.returncode != 0 and "Organization" in bad_org.stderr
    assert add_user("hn-noble").returncode == 0
    duplicate = add_user("hn-noble")
    assert duplicate.returncode != 0 and "exists" in duplicate.stderr


def _login_page(http: TestClient, engine: Engine) -> object:
    register_app(engine, "app")
    register_staff(engine, "nurse")
    _, challenge = pkce()
    return http.get(authorize_url("app", "user/*.rs", challenge))


def test_login_failures_share_one_message_and_lock_the_account(
    http: TestClient, engine: Engine, settings: Settings
) -> None:
    page = _login_page(http, engine)
    unknown = submit(http, page, "login-form", username="nobody", password=PASSWORD)  # type: ignore[arg-type]
    wrong = submit(http, unknown, "login-form", username="nurse", password="wrong-password")
    assert unknown.status_code == wrong.status_code == 401
    assert "Invalid user name or password." in unknown.text and "Invalid user name or password." in wrong.text
    page = wrong
    for _ in range(settings.smart_login_max_failures - 1):
        page = submit(http, page, "login-form", username="nurse", password="wrong-password")
    locked = submit(http, page, "login-form", username="nurse", password=PASSWORD)
    assert locked.status_code == 401 and "Invalid user name or password." in locked.text, (
        "locked: even the right password fails"
    )
    with engine.connect() as conn:
        locked_until = conn.execute(select(smart_user.c.locked_until).where(smart_user.c.username == "nurse")).scalar()
    assert locked_until is not None and locked_until > 0


def test_login_success_resets_failures_and_sets_a_safe_cookie(http: TestClient, engine: Engine) -> None:
    page = _login_page(http, engine)
    page = submit(http, page, "login-form", username="nurse", password="wrong-password")  # type: ignore[arg-type]
    ok = submit(http, page, "login-form", username="nurse", password=PASSWORD)
    assert ok.status_code == 303 and ok.headers["location"].startswith("authorize?")
    cookie = next(v for k, v in ok.headers.multi_items() if k == "set-cookie" and v.startswith("calaim_smart_session="))
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "secure" in lowered and "path=/auth" in lowered
    with engine.connect() as conn:
        assert conn.execute(select(smart_user.c.failed_logins).where(smart_user.c.username == "nurse")).scalar() == 0


def test_login_form_needs_its_csrf_token(http: TestClient, engine: Engine) -> None:
    page = _login_page(http, engine)
    forged = submit(http, page, "login-form", username="nurse", password=PASSWORD, _csrf="forged")  # type: ignore[arg-type]
    assert forged.status_code == 403
    http.cookies.clear()
    no_cookie = submit(http, page, "login-form", username="nurse", password=PASSWORD)  # type: ignore[arg-type]
    assert no_cookie.status_code == 403


def test_consent_form_needs_the_session_csrf_token(http: TestClient, engine: Engine) -> None:
    page = _login_page(http, engine)
    consent = submit(http, page, "login-form", username="nurse", password=PASSWORD)  # type: ignore[arg-type]
    consent = http.get("/auth/" + consent.headers["location"])
    forged = submit(http, consent, "consent-form", _decision="approve", _csrf="forged")
    assert forged.status_code == 403 and "location" not in forged.headers
    by_get = http.get("/auth/authorize", params=[*forms(consent.text)["consent-form"].fields, ("_decision", "approve")])
    assert by_get.status_code == 200 and "consent-form" in forms(by_get.text), "a GET never approves"
