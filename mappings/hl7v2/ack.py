"""General acknowledgements (ACK, HL7 v2.5.1 §2.9 and §2.14.1): MSH, MSA, ERR.

Original mode (§2.9.2): one ACK with MSA-1 AA (applied: sent only after the commit), AE (content error,
with an ERR per problem) or AR (rejected). Enhanced mode (§2.9.3), when the sender fills MSH-15/16: an
accept ACK (MSA-1 CA/CE/CR: the message was / could not be safely stored) under MSH-15's condition and
an application ACK (AA/AE/AR) under MSH-16's (table 0155: AL always, NE never, ER on error or reject,
SU on success). MSA-2 always echoes the message's MSH-10.

The ACK answers as the receiver: its MSH-3/4 are the message's MSH-5/6 and the other way round; it uses
the sender's delimiters, version, processing id and character set (MSH-18).
"""

from __future__ import annotations

from mappings.hl7v2.er7 import STANDARD, Header, message, segment
from mappings.hl7v2.errors import TABLE_0357, Problem

ACCEPT_CODES = {"AA": "CA", "AE": "CA", "AR": "CR"}
"""Application outcome → accept acknowledgement code, when the message was stored (CE: it was not)."""


def wants(condition: str, code: str) -> bool:
    """Whether an acknowledgement with ``code`` is sent under a table 0155 ``condition`` ("" = AL)."""
    condition = condition or "AL"
    if condition == "NE":
        return False
    if condition == "ER":
        return code not in ("AA", "CA")
    if condition == "SU":
        return code in ("AA", "CA")
    return True


def build_ack(
    header: Header | None,
    *,
    code: str,
    control_id: str,
    timestamp: str,
    problems: list[Problem] | None = None,
    text: str = "",
    default_version: str = "2.5.1",
    default_processing_id: str = "P",
) -> str:
    """An ACK for ``header`` (None when the MSH itself was unreadable) with MSA-1 ``code``."""
    d = header.delimiters if header is not None else STANDARD
    event = header.trigger_event if header is not None else ""
    msh = segment(
        "MSH",
        header.receiving_application if header else "",
        header.receiving_facility if header else "",
        header.sending_application if header else "",
        header.sending_facility if header else "",
        timestamp,
        "",
        ("ACK", event, "ACK") if event else ("ACK",),
        control_id,
        (header.processing_id if header and header.processing_id else default_processing_id),
        (header.version if header and header.version else default_version),
        "",
        "",
        "",
        "",
        "",
        header.charset if header else "",
        d=d,
    )
    segments = [msh, segment("MSA", code, header.control_id if header else "", text[:80], d=d)]
    for problem in problems or []:
        location = problem.location.parts() if problem.location else ()
        segments.append(
            segment(
                "ERR",
                "",
                location,
                (problem.code, TABLE_0357.get(problem.code, ""), "HL70357"),
                problem.severity,
                "",
                "",
                "",
                problem.text,
                d=d,
            )
        )
    return message(segments)
