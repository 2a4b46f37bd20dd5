"""HL7 v2 ↔ FHIR for the county interface (docs/hl7v2.md): pure functions, no I/O and no store.

- ``er7``: delimiters, escapes, the MSH read before parsing, ER7 writing;
- ``message``: parsing with hl7apy into a read-only view; ``profiles``: the county message profiles;
- ``ref_i12``, ``adt``: inbound REF^I12 and ADT A01/A03/A04/A08 → FHIR transaction Bundles;
- ``rri_i12``: FHIR → outbound RRI^I12; ``ack``: ACK messages (original and enhanced mode);
- ``datatypes``, ``segments``, ``tables``: the v2-to-FHIR data type, segment and vocabulary maps.
"""
