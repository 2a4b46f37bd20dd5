"""Helpers for the SMART tests: register clients and users through the registry, run the real
authorization-code flow over HTTP (login form, patient picker, consent form, token endpoint), and sign
client assertions for SMART Backend Services. Synthetic users and patients only.

How another test gets a token for an organization, patient and scope (the app is any ``TestClient``
(or httpx client) on the gateway with an ``https://`` base URL; the engine is ``ctx.repo.engine``)::

    token = user_token(http, engine, organization="hn-altamed", scope="patient/*.rs", patient="m-a")
    http.get("/fhir/Observation", headers={"Authorization": f"Bearer {token['access_token']}"})

    token = backend_token(http, engine, organization="hn-noble", scope="system/*.rs")
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import Engine

from adapters.smart.registry import add_client, add_user, get_client, get_user

HTTPS_BASE = "https://testserver"
FHIR_BASE = f"{HTTPS_BASE}/fhir"
TOKEN_URL = f"{HTTPS_BASE}/auth/token"
REDIRECT = "https://app.example.org/callback"
PASSWORD = "synthetic-pass-123"
APP_SCOPES = (
    "launch launch/patient openid fhirUser offline_access online_access "
    "patient/*.cruds user/*.cruds patient/*.read patient/*.write"
)


def pkce() -> tuple[str, str]:
    """A PKCE ``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Form:
    """An HTML form of a page: its action, method, fields (hidden and text inputs) and radio choices."""

    id: str
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    radios: dict[str, list[str]] = field(default_factory=dict)
    buttons: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, Form] = {}
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("id", ""), a.get("action", ""), a.get("method", "get").upper())
            self.forms[self._current.id] = self._current
        elif self._current is not None and tag == "input" and a.get("name"):
            if a.get("type") == "radio":
                self._current.radios.setdefault(a["name"], []).append(a.get("value", ""))
            else:
                self._current.fields.append((a["name"], a.get("value", "")))
        elif self._current is not None and tag == "button" and a.get("name"):
            self._current.buttons[a.get("value", "")] = a["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms(html: str) -> dict[str, Form]:
    """The forms of a page by id."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def register_app(
    engine: Engine,
    client_id: str = "app",
    *,
    scope: str = APP_SCOPES,
    secret: str | None = None,
    redirect_uri: str = REDIRECT,
) -> str:
    """A public app (or symmetric with ``secret``), registered once."""
    if get_client(engine, client_id) is None:
        add_client(engine, client_id=client_id, scope=scope, redirect_uris=[redirect_uri], secret=secret)
    return client_id


def register_staff(
    engine: Engine, username: str = "nurse", *, organization: str = "hn-altamed", fhir_user: str | None = None
) -> str:
    """A user acting for ``organization``, registered once; password ``PASSWORD``."""
    if get_user(engine, username) is None:
        add_user(engine, username=username, password=PASSWORD, organization=organization, fhir_user=fhir_user)
    return username


def authorize_url(
    client_id: str,
    scope: str,
    challenge: str,
    *,
    state: str = "st-1",
    aud: str = FHIR_BASE,
    redirect_uri: str = REDIRECT,
    **extra: str,
) -> str:
    """``/auth/authorize?...`` for a code flow with PKCE S256."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return "/auth/authorize?" + urlencode(params)


def submit(http: httpx.Client, page: httpx.Response, form_id: str, **values: str) -> httpx.Response:
    """Submit form ``form_id`` of ``page`` with its fields, overridden/extended by ``values``."""
    form = forms(page.text)[form_id]
    fields: list[tuple[str, str | int | float | bool | None]] = [(k, v) for k, v in form.fields if k not in values]
    fields += list(values.items())
    url = urljoin(str(page.url), form.action)
    if form.method == "POST":
        return http.post(url, data=dict(fields), follow_redirects=False)
    return http.get(url, params=fields, follow_redirects=False)


def follow(http: httpx.Client, response: httpx.Response) -> httpx.Response:
    """Follow local redirects (303 after login); stop at one to the app's redirect_uri."""
    while response.status_code in (302, 303) and not response.headers["location"].startswith(REDIRECT):
        response = http.get(urljoin(str(response.url), response.headers["location"]), follow_redirects=False)
    return response


def login(http: httpx.Client, page: httpx.Response, username: str, password: str = PASSWORD) -> httpx.Response:
    """Fill in the login page; the next page (after the redirect back to authorize)."""
    return follow(http, submit(http, page, "login-form", username=username, password=password))


def callback_params(response: httpx.Response) -> dict[str, str]:
    """The query of the redirect to the app (``code`` and ``state``, or ``error``)."""
    assert response.status_code == 302, (response.status_code, response.text[:500])
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def run_code_flow(
    http: httpx.Client,
    *,
    client_id: str,
    username: str,
    scope: str,
    patient: str | None = None,
    launch: str | None = None,
    verifier_challenge: tuple[str, str] | None = None,
) -> tuple[dict[str, str], str]:
    """Authorize as ``username`` (login, picker choosing ``patient`` when shown, consent): the callback
    parameters and the PKCE verifier."""
    verifier, challenge = verifier_challenge or pkce()
    extra = {"launch": launch} if launch else {}
    page = http.get(authorize_url(client_id, scope, challenge, **extra), follow_redirects=False)
    if "login-form" in forms(page.text):
        page = login(http, page, username)
    if "pick-form" in forms(page.text) or "filter-form" in forms(page.text):
        assert patient is not None, "the picker is shown: name a patient"
        page = submit(http, page, "pick-form", _pick=patient)
    assert "consent-form" in forms(page.text), page.text[:1000]
    done = submit(http, page, "consent-form", _decision="approve")
    return callback_params(done), verifier


def exchange_code(
    http: httpx.Client, code: str, verifier: str, client_id: str, *, secret: str | None = None
) -> httpx.Response:
    """The token request for an authorization code."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    if secret is None:
        data["client_id"] = client_id
        return http.post(TOKEN_URL, data=data)
    return http.post(TOKEN_URL, data=data, auth=(client_id, secret))


def user_token(
    http: httpx.Client,
    engine: Engine,
    *,
    organization: str,
    scope: str,
    patient: str | None = None,
    fhir_user: str | None = None,
) -> dict[str, Any]:
    """A token response for a user of ``organization`` who launched a public app standalone with
    ``scope`` (choosing ``patient`` in the picker when the scope needs one): registers the app and the
    user, runs the real login/picker/consent/token flow."""
    client_id = register_app(engine, f"app-{organization}")
    username = register_staff(engine, f"staff-{organization}", organization=organization, fhir_user=fhir_user)
    http.cookies.clear()
    params, verifier = run_code_flow(http, client_id=client_id, username=username, scope=scope, patient=patient)
    response = exchange_code(http, params["code"], verifier, client_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- SMART Backend Services --------------------------------------------------------------------------


def es384_key() -> ECKey:
    """A fresh P-384 private key with a kid."""
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    return key


def rs384_key() -> RSAKey:
    """A fresh RSA private key with a kid."""
    key = RSAKey.generate_key(2048, private=True)
    key.ensure_kid()
    return key


def public_jwks(*keys: ECKey | RSAKey) -> dict[str, Any]:
    """The public JWK Set of ``keys``."""
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(
    client_id: str,
    key: ECKey | RSAKey,
    *,
    alg: str | None = None,
    aud: str = TOKEN_URL,
    exp_in: int = 240,
    jti: str | None = None,
    **overrides: Any,
) -> str:
    """A signed client assertion (RFC 7523) as a backend client builds it."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "jti": jti or uuid.uuid4().hex}
    claims.update(overrides)
    algorithm = alg or ("ES384" if isinstance(key, ECKey) else "RS384")
    header = {"alg": algorithm, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[algorithm])


def backend_form(client_id: str, key: ECKey | RSAKey, scope: str, **assertion_args: Any) -> dict[str, str]:
    """The client_credentials token request of a backend client."""
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(client_id, key, **assertion_args),
    }


def register_backend(
    engine: Engine, client_id: str, key: ECKey | RSAKey, *, organization: str, scope: str = "system/*.cruds"
) -> str:
    """A backend client with ``key``'s public JWKS acting for ``organization``, registered once."""
    if get_client(engine, client_id) is None:
        add_client(engine, client_id=client_id, scope=scope, jwks=public_jwks(key), organization=organization)
    return client_id


def backend_token(http: httpx.Client, engine: Engine, *, organization: str, scope: str) -> dict[str, Any]:
    """A SMART Backend Services token response for a client of ``organization``."""
    key = es384_key()
    client_id = register_backend(engine, f"backend-{organization}-{str(key.kid)[:8]}", key, organization=organization)
    response = http.post(TOKEN_URL, data=backend_form(client_id, key, scope))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
