"""Narrowing SQL shared by grants: their organization and launch patient as bound parameters (issue 5).

A caller's narrowing (``gateway.auth.access``) is compiled to driver SQL once and run many times. With the
grant's organization and launch patient inline, every grant had statements of its own, and sqlite3 (128
prepared statements per connection) prepared them again once more grants than that took turns on a
pinned connection (53 µs per narrowed read against 12.6 µs cached, docs/performance.md). So the condition
is built for a *template* grant whose organization and patient are the marker strings below, compiled
with its constants inline, and each quoted marker is replaced by a positional placeholder
(``placeholders``): grants of one shape (``gateway.auth.shapes.Shape``) share the text, and each binds its
own values in the markers' order (``bind_values``).

The markers carry a random per-process part, so no scope, parameter code or stored value can contain one:
the only markers in a compiled text are those the template put there.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence

from sqlalchemy import Dialect

__all__ = ["ORGANIZATION", "PATIENT", "RES_ID", "Marked", "bind_values", "placeholders"]

_NONCE = secrets.token_hex(8)
ORGANIZATION = f"organization-{_NONCE}"
"""The template grant's organization id (bound to each grant's own)."""
PATIENT = f"patient-{_NONCE}"
"""The template grant's launch patient id (bound to each grant's own)."""
RES_ID = f"res-id-{_NONCE}"
"""The resource id of a point statement (bound at each read)."""
_QUOTED = re.compile(rf"'((?:organization|patient|res-id)-{_NONCE})'")

Marked = tuple[str, tuple[str, ...]]
"""Driver SQL with positional placeholders, and the marker each placeholder stands for, in text order."""


def placeholders(sql: str, dialect: Dialect) -> Marked:
    """``sql`` (compiled with its constants inline) with each quoted marker replaced by the dialect's
    positional placeholder, and the markers in text order."""
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return mark

    return _QUOTED.sub(replace, sql), tuple(names)


def bind_values(names: Sequence[str], values: Mapping[str, str | None]) -> tuple[str | None, ...]:
    """The values to bind for ``names`` (markers in text order), from ``values`` (marker → a grant's value)."""
    return tuple([values[name] for name in names])
