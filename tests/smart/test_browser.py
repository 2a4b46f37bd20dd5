"""A standalone launch in a real headless browser (Debian chromium driven by playwright) against a real
gateway process: the login page, the patient picker with its name filter, the consent page, and the
redirect to the app (a real local HTTP server), whose code the app then exchanges for a token.

Without /usr/bin/chromium the test is skipped with a message, unless CALAIM_TEST_REQUIRE_BROWSER=1
(CI), which makes it fail; scripts/install-browser installs it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.store.database import make_engine
from tests.calaim.support import add_member
from tests.smart.support import PASSWORD, pkce, register_app, register_staff
from tests.support.server import gateway_process

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CALAIM_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail("CALAIM_TEST_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (run scripts/install-browser)")
        pytest.skip(
            "chromium is not installed (/usr/bin/chromium): run scripts/install-browser to run the browser test"
        )
    return CHROMIUM


@pytest.fixture
def app_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """The app's redirect_uri: a real HTTP server on 127.0.0.1 that records each callback's query."""
    received: list[dict[str, str]] = []

    class Callback(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/callback":  # not /favicon.ico
                received.append({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
            body = b"<!doctype html><title>app</title><p id='done'>signed in</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/callback", received
    finally:
        server.shutdown()
        server.server_close()


def test_standalone_launch_in_a_browser(
    chromium: Path, database_url: str, client: TestClient, app_server: tuple[str, list[dict[str, str]]]
) -> None:
    from playwright.sync_api import sync_playwright

    redirect_uri, received = app_server
    add_member(client, "1")
    add_member(client, "2")
    engine = make_engine(database_url)
    try:
        register_app(
            engine, "browser-app", redirect_uri=redirect_uri, scope="launch/patient openid fhirUser patient/*.rs"
        )
        register_staff(engine, "nurse", organization="hn-altamed", fhir_user="Practitioner/p-1")
    finally:
        engine.dispose()
    verifier, challenge = pkce()
    with gateway_process(database_url, env={"CALAIM_AUTH_ENABLED": "true"}) as base:
        query = {
            "response_type": "code",
            "client_id": "browser-app",
            "redirect_uri": redirect_uri,
            "scope": "launch/patient openid fhirUser patient/*.rs",
            "state": "browser-state",
            "aud": f"{base}/fhir",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{base}/auth/authorize?{urlencode(query)}")
                assert page.title().startswith("Sign in")
                page.fill("#username", "nurse")
                page.fill("#password", "wrong password")
                page.click("#sign-in")
                assert page.text_content("#login-error") == "Invalid user name or password."
                page.fill("#username", "nurse")
                page.fill("#password", PASSWORD)
                page.click("#sign-in")
                page.wait_for_selector("#pick-form")
                assert page.locator("input[name=_pick]").count() == 2
                page.fill("#name-filter", "Member2")
                page.click("#filter")
                page.wait_for_selector("#pick-form")
                assert page.locator("input[name=_pick]").count() == 1
                page.check("input[name=_pick][value=m-2]")
                page.click("#choose")
                page.wait_for_selector("#consent-form")
                assert "patient/*.rs" in (page.text_content("#scopes") or "")
                page.click("#approve")
                page.wait_for_selector("#done")
            finally:
                browser.close()
        assert len(received) == 1 and received[0]["state"] == "browser-state"
        token = httpx.post(
            f"{base}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": received[0]["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": "browser-app",
            },
        )
        assert token.status_code == 200, token.text
        body = token.json()
        assert body["patient"] == "m-2" and body["need_patient_banner"] is True and body["id_token"]
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert httpx.get(f"{base}/fhir/Patient/m-2", headers=bearer).status_code == 200
