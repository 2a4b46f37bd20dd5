"""Value normalization shared by index extraction and query parsing.

String search is case- and accent-insensitive (https://hl7.org/fhir/R4/search.html#string): both the
stored value and the searched value pass through ``fold``.
"""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """Case-fold and strip combining marks (accents), collapse whitespace.

    Remembered for short texts (``_FOLDED``): codes' displays and names repeat across writes. ASCII text
    takes a fast path (it has no marks to strip, and its casefold is ``lower``).
    """
    folded = _FOLDED.get(text)
    if folded is not None:
        return folded
    if text.isascii():
        folded = " ".join(text.lower().split())
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        folded = " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().split())
    if len(text) <= _FOLDED_LENGTH:
        if len(_FOLDED) >= _FOLDED_TEXTS:
            _FOLDED.clear()
        _FOLDED[text] = folded
    return folded


_FOLDED: dict[str, str] = {}
_FOLDED_TEXTS = 4096
"""Texts remembered (all forgotten when full)."""
_FOLDED_LENGTH = 64
"""Longer texts are folded each time."""
