"""The SMART token benchmark: ``python -m bench.smart_tokens [--requests 400]``.

Measures in one run, on this machine, with a real SQLite store and the real app (in-process over
httpx's ASGI transport, so HTTP parsing, form decoding, authlib and the store are all counted):

- client_credentials issuance/s (SMART Backend Services: verify an ES384 client assertion, record its
  jti, issue an access token (a random handle, adapters/smart/handles.py), record it) next to its limit,
  the same cryptography alone (one ES384 verification with joserfc, no HTTP, no store);
- refresh issuance/s (rotation: spend the refresh token, store the new access and refresh tokens) next to
  the id_token's RS256 signature alone (what an ``openid`` refresh signs);
- ``AccessTokenVerifier.verify``: a first sight of a token (one primary-key read of its row) next to that
  read alone, and a cache hit (the per-request cost) next to a dict lookup.

Each figure is printed with its limit and the ratio; every number and the machine facts go to
bench/results/smart-tokens-DATE.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from adapters.smart.handles import digest
from adapters.smart.registry import add_client, add_user, get_user
from adapters.smart.routes import smart_server
from adapters.smart.tokens import LaunchContext
from adapters.smart.verify import AccessTokenVerifier
from bench.machine import machine_info, summary_line
from bench.report import Figure, legend, table, write_json
from gateway.fhir.core import build_context
from gateway.settings import Settings
from gateway.store.schema import smart_access_token
from gateway.web.app import create_app

RESULTS = Path(__file__).resolve().parent / "results"
BASE = "https://bench.test"
FHIR_BASE = f"{BASE}/fhir"
TOKEN_URL = f"{BASE}/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _rate(count: int, call: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        call()
    return count / (time.perf_counter() - started)


def _assertion(key: ECKey, client_id: str) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": int(time.time()) + 240,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": "ES384", "kid": key.kid}, claims, key, algorithms=["ES384"])


def run(requests: int, workdir: Path) -> list[Figure]:
    """Measure every figure with ``requests`` operations each."""
    settings = Settings(database_url=f"sqlite:///{workdir / 'smart.db'}", sqlite_synchronous="NORMAL")
    ctx = build_context(settings)
    app = create_app(settings, context=ctx, background=False)
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    engine = ctx.repo.engine
    add_client(engine, client_id="bench-backend", scope="system/*.rs", jwks={"keys": [key.as_dict(private=False)]})
    client = add_client(
        engine, client_id="bench-app", scope="user/*.rs offline_access", redirect_uris=["https://a.test/cb"]
    )
    add_user(engine, username="bench-user", password="bench-password", organization="hn-altamed")
    figures: list[Figure] = []
    with TestClient(app, base_url=BASE) as http:
        server = smart_server(app, settings)
        signing = server.key
        # --- client_credentials --------------------------------------------------------------------
        forms = [
            {
                "grant_type": "client_credentials",
                "scope": "system/*.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": _assertion(key, "bench-backend"),
            }
            for _ in range(requests)
        ]
        assert http.post(TOKEN_URL, data=forms.pop()).status_code == 200  # warm-up
        issued = _rate(len(forms), lambda: _ok(http.post(TOKEN_URL, data=forms.pop())))
        sample = _assertion(key, "bench-backend")
        claims = {"iss": FHIR_BASE, "sub": "x", "aud": FHIR_BASE, "exp": int(time.time()) + 300, "scope": "system/*.rs"}

        def crypto() -> None:
            jwt.decode(sample, key, algorithms=["ES384"])

        figures.append(Figure("client_credentials tokens", "/s", issued, _rate(requests, crypto), "ES384 verify alone"))
        # --- refresh rotation ----------------------------------------------------------------------
        user = get_user(engine, "bench-user")
        assert user is not None
        first = server.tokens.issue(
            issuer=FHIR_BASE,
            client=client,
            user=user,
            scope="user/*.rs offline_access",
            context=LaunchContext(),
            grant_id=uuid.uuid4().hex,
            refresh_scope="user/*.rs offline_access",
        )
        state: dict[str, Any] = {"refresh": first["refresh_token"], "access": first["access_token"]}

        def refresh() -> None:
            data = {"grant_type": "refresh_token", "refresh_token": state["refresh"], "client_id": "bench-app"}
            body = _ok(http.post(TOKEN_URL, data=data))
            state["refresh"], state["access"] = body["refresh_token"], body["access_token"]

        refreshed = _rate(requests, refresh)
        sign_only = _rate(
            requests, lambda: jwt.encode({"alg": signing.alg}, claims, signing.key, algorithms=[signing.alg])
        )
        figures.append(Figure("refresh (rotation) tokens", "/s", refreshed, sign_only, "RS256 sign alone (id_token)"))
        # --- verification --------------------------------------------------------------------------
        tokens = [
            server.tokens.issue(
                issuer=FHIR_BASE, client=client, user=user, scope="user/*.rs", context=LaunchContext(), grant_id=None
            )["access_token"]
            for _ in range(requests)
        ]
        verifier = AccessTokenVerifier(engine, settings)
        verifier.verify(state["access"], audience=FHIR_BASE)
        pending = list(tokens)
        full = _rate(len(pending), lambda: verifier.verify(pending.pop(), audience=FHIR_BASE))
        row = select(smart_access_token).where(smart_access_token.c.jti == digest(tokens[0]))

        def read_row() -> None:
            with engine.connect() as conn:
                conn.execute(row).first()

        raw = _rate(requests, read_row)
        figures.append(Figure("verify, first sight", "/s", full, raw, "the token's row read alone"))
        hits = requests * 200
        token = tokens[0]
        cached = _rate(hits, lambda: verifier.verify(token, audience=FHIR_BASE))
        lookup: dict[str, float] = {token: 0.0}
        figures.append(Figure("verify, cache hit", "/s", cached, _rate(hits, lambda: lookup.get(token)), "dict lookup"))
    ctx.repo.engine.dispose()
    return figures


def _ok(response: Any) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"token request failed: {response.status_code} {response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.smart_tokens", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="operations per figure")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default bench/results/...)")
    args = parser.parse_args(argv)
    info = machine_info()
    print(summary_line(info), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="smart-bench-") as tmp:
        figures = run(args.requests, Path(tmp))
    print(table(figures))
    print(legend(figures))
    for fig in figures:
        if fig.name.startswith("verify"):
            print(f"  {fig.name}: {1e6 / fig.value:.1f} us per call")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"smart-tokens-{stamp}.json"
    write_json(output, {"machine": info, "requests": args.requests}, figures)


if __name__ == "__main__":
    main()
