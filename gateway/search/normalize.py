"""Value normalization shared by index extraction and query parsing.

String search is case- and accent-insensitive (https://hl7.org/fhir/R4/search.html#string): both the
stored value and the searched value pass through ``fold``.
"""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """Case-fold and strip combining marks (accents), collapse whitespace."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
