"""Access tokens as opaque handles (SMART App Launch 2.x and Backend Services treat the access token as
opaque to the client: https://hl7.org/fhir/smart-app-launch/ ; RFC 6749 §1.4, RFC 6750 §2.1).

An access token is 256 random bits, URL-safe base64 (43 characters), instead of a ~770-character JWT:
every FHIR request carries it, and the server parsed, copied and compared the long one each time
(docs/performance.md "After (session 9)"). What it grants lives in its ``smart_access_token`` row, whose key
is the handle's SHA-256 digest (``digest``), so neither a copy of the table nor an AuditEvent naming the
``jti`` can be presented as a token. Refresh tokens, codes and session ids are the same kind of secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets

HANDLE_BYTES = 32
"""Random bytes of an access token (256 bits of entropy; RFC 6749 §10.10 asks at least 128)."""

_HANDLE = re.compile(r"[A-Za-z0-9_-]{43}")
"""What ``new_handle`` makes: 43 characters of the URL-safe base64 alphabet (RFC 4648 §5, no padding)."""


def new_handle() -> str:
    """A fresh unguessable bearer secret (256 bits, 43 URL-safe characters)."""
    return secrets.token_urlsafe(HANDLE_BYTES)


def is_handle(text: str) -> bool:
    """Whether ``text`` has the form of a handle (anything else was never issued; not worth a look-up)."""
    return _HANDLE.fullmatch(text) is not None


def digest(secret: str) -> str:
    """SHA-256 hex digest of a bearer secret: how the store keys access and refresh tokens, codes, launch
    ids and session ids (the secret itself is never stored)."""
    return hashlib.sha256(secret.encode()).hexdigest()
