"""The county HL7 v2 interface over MLLP (docs/hl7v2.md): the listener for the county's REF^I12 and ADT
messages, the message log, and the outbound RRI^I12 sender.

- ``mllp``: MLLP framing (0x0B … 0x1C 0x0D) as an incremental decoder; ``server``: the asyncio listener;
  ``client``: the blocking client the RRI sender uses;
- ``processor``: one message → ACK (charset, MSH checks, parse, map, apply, log), batched commits;
- ``apply``: a mapped Bundle through the FHIR core and the CalAIM workflow, in the caller's transaction;
- ``batch``: the referrals of a commit group (new members, re-referrals) written as a group, with ``plan``
  (their resources, planned before any write) and ``lookups`` (the group's screening queries);
- ``messagelog``: the ``hl7v2_message`` table; ``outbound``: RRI^I12 from the outbox;
- ``service``: the background service of ``calaim-gateway serve``; ``cli``: ``calaim-gateway mllp``.
"""
