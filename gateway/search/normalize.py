"""Value normalization shared by index extraction and query parsing.

String search is case- and accent-insensitive (https://hl7.org/fhir/R4/search.html#string): both the
stored value and the searched value pass through ``fold``.
"""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """Case-fold and strip combining marks (accents), collapse whitespace.

    ASCII text takes a fast path (it has no marks to strip, and its casefold is ``lower``): this runs for
    every string index row written.
    """
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
