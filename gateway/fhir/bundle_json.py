"""Bundles assembled from stored bytes (DESIGN.md choice 1: never re-serialize stored resources).

The envelope fields are serialized with orjson; each resource's stored JSON bytes are spliced in as
they are. https://hl7.org/fhir/R4/bundle.html
"""

from __future__ import annotations

from typing import Any

from gateway import jsonutil


def entry_bytes(fields: dict[str, Any], resource: bytes | None) -> bytes:
    """One Bundle.entry: ``fields`` (fullUrl, search, request, response) plus the raw ``resource``."""
    envelope = jsonutil.dumps(fields)
    if resource is None:
        return envelope
    if envelope == b"{}":
        return b'{"resource":' + resource + b"}"
    return b'{"resource":' + resource + b"," + envelope[1:]


def bundle_bytes(bundle_type: str, entries: list[bytes], *, extra: dict[str, Any] | None = None) -> bytes:
    """A Bundle of ``bundle_type`` with the given entry bytes; ``extra`` adds total, link, id, meta, ..."""
    head: dict[str, Any] = {"resourceType": "Bundle", "type": bundle_type}
    if extra:
        head.update(extra)
    prefix = jsonutil.dumps(head)[:-1]
    if not entries:
        return prefix + b"}"
    return prefix + b',"entry":[' + b",".join(entries) + b"]}"
