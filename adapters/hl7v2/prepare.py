"""Step 1 of an inbound message (docs/hl7v2.md "Processing"): read the MSH, check it, decode with MSH-18,
parse with hl7apy, check the profile and map to a FHIR transaction Bundle. No database.

This module imports only the mappings (hl7apy), the header checks, the validator's model pass
(``adapters.hl7v2.prevalidate``, fhir.resources) and ``gateway.errors`` (its log helper), so that a parse worker process
(``adapters.hl7v2.parsepool``) starts without the store. With the plan's configuration
(``Preparer.policy``, the listener's) a REF^I12's grouped-write plan (``adapters.hl7v2.plan``: ids, the R4
walk and profile check, routing; no database) is decided here too, in the worker, instead of on the
commit thread; that module (and the FHIR core's validation) is imported on first use.

A ``Preparer`` holds what step 1 needs (the processing id the interface expects, the transport's message
size limit, the mapping configuration, the plan's) and is picklable: the pool hands it to each worker
once. ``Prepared`` results are picklable too (bytes, frozen dataclasses, JSON dicts, ``V2Error``, the
plan), so they come back from a worker unchanged.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from adapters.hl7v2.prevalidate import model_verdicts
from gateway.errors import frames
from mappings.hl7v2 import profiles
from mappings.hl7v2.adt import map_adt
from mappings.hl7v2.bundle import Mapped
from mappings.hl7v2.er7 import Header, HeaderError, read_header
from mappings.hl7v2.errors import (
    DATA_TYPE_ERROR,
    INTERNAL_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION,
    Location,
    Problem,
    V2Error,
    reject,
)
from mappings.hl7v2.message import parse
from mappings.hl7v2.profiles import MappingConfig
from mappings.hl7v2.ref_i12 import map_ref_i12
from mappings.hl7v2.tables import CHARSETS

if TYPE_CHECKING:
    from adapters.hl7v2.plan import Plan
    from gateway.calaim.policy import Policy

log = logging.getLogger("adapters.hl7v2")

DEFAULT_CHARSET = "UNICODE UTF-8"
"""Decoding of a message without MSH-18 (HL7's default is ASCII, which UTF-8 contains)."""

MAPS: dict[str, Callable[[Any, MappingConfig], Mapped]] = {"REF": map_ref_i12, "ADT": map_adt}


class _LazyMapped:
    """``Prepared.mapped``, read back from a parse worker's answer on first use (session 12).

    The listener's event loop unpickles every answer, and a planned REF^I12's Bundle (its dicts, and the
    ``Location`` of every mapped element in ``Mapped.sources``) was ~60 % of that unpickling, which was
    ~70 % of the loop's instructions per message: the group commit writes the plan's own copies of the
    resources and reads the Bundle only for a message it cannot write as planned (the per-message path, a
    re-referral). So an answer carries the ``Mapped`` as a pickle of its own (``Prepared.__getstate__``)
    and this descriptor unpickles it when ``mapped`` is first read: the same object, later or never."""

    @overload
    def __get__(self, prepared: None, owner: type[Prepared] | None = None) -> None: ...

    @overload
    def __get__(self, prepared: Prepared, owner: type[Prepared] | None = None) -> Mapped | None: ...

    def __get__(self, prepared: Prepared | None, owner: type[Prepared] | None = None) -> Mapped | None:
        if prepared is None:
            return None  # the dataclass field's default
        state = prepared.__dict__
        wire = state.get(_WIRE)
        if wire is not None:  # stored before the pickle is dropped: a reader in another thread never sees neither
            state.setdefault("mapped", pickle.loads(wire))  # noqa: S301  (our own worker's answer, as the rest)
            state.pop(_WIRE, None)
        found: Mapped | None = state.get("mapped")
        return found

    def __set__(self, prepared: Prepared, value: Mapped | None) -> None:
        prepared.__dict__.pop(_WIRE, None)
        prepared.__dict__["mapped"] = value


_WIRE = "_mapped_pickle"
"""Where an unpickled ``Prepared`` keeps its ``Mapped`` until it is read (``_LazyMapped``)."""


@dataclass
class Prepared:
    """A message after step 1: its header (None when unreadable), its Bundle or the error to answer."""

    raw: bytes
    header: Header | None
    mapped: Mapped | None = field(default=None, repr=False)
    """The Bundle and its sources (not in the repr: it holds the message's content, which is PHI). Read
    through ``_LazyMapped``, installed below."""
    error: V2Error | None = None
    model_ok: tuple[bool, ...] = ()
    """Per entry of the Bundle: the R4B model pass accepted its resource (``adapters.hl7v2.prevalidate``)."""
    planned: bool = False
    """``plan`` was decided in step 1 (``Preparer.policy`` set): the group commit takes it as it is."""
    plan: Plan | None = None
    """The grouped write's plan of a referral of a new member (``adapters.hl7v2.plan.plan``; None: the
    message takes the per-message path unless the store knows its member)."""

    def __getstate__(self) -> dict[str, Any]:
        """The pickled form: ``mapped`` as a pickle of its own, read back on first use (``_LazyMapped``)."""
        state = dict(self.__dict__)
        mapped = state.pop("mapped", None)
        if mapped is not None:
            state[_WIRE] = pickle.dumps(mapped, pickle.HIGHEST_PROTOCOL)
        return state

    def release(self) -> None:
        """Drop the plan once the message is committed (``GroupCommitter``). A ``Plan`` refers back to its
        ``Prepared`` (``Plan.prepared``), so the message's ~100 containers (its Bundle's dicts and lists, its
        ``Location``s, the plan's rows) formed a cycle that reference counting never frees: in the listener's
        process they outlived a young collection or two (in flight meanwhile) and were freed only by the
        older generations' collections: pauses of every thread of ~6 ms on average every ~50 messages and a
        full collection of 56-81 ms every few thousand (docs/performance.md "County HL7 v2", session 10).
        Without the plan, the last reference to the message frees it at once. A message committed again is
        planned again (``batch.plans_for``)."""
        self.plan, self.planned = None, False

    @property
    def key(self) -> tuple[str, str] | None:
        """(sender, MSH-10) when both can be trusted."""
        if self.header is None or not self.header.control_id:
            return None
        return self.header.sender, self.header.control_id

    @property
    def message_type(self) -> str:
        header = self.header
        return f"{header.message_type}^{header.trigger_event}" if header is not None else ""


# The dataclass took ``mapped``'s default (None) from the field; its generated ``__init__`` sets it through
# the descriptor from now on.
setattr(Prepared, "mapped", _LazyMapped())  # noqa: B010  (typed as the field it stands for)


@dataclass(frozen=True)
class Preparer:
    """Step 1 with its configuration (module docstring)."""

    processing_id: str
    """MSH-11 the interface takes (``hl7v2_processing_id``)."""
    max_message_bytes: int
    """The transport's limit (``mllp_max_message_bytes``), named in the answer to an oversized message."""
    config: MappingConfig
    validate_models: bool = False
    """Run the R4B model pass of the mapped resources here (in the parse worker), not in the commit thread."""
    policy: Policy | None = None
    """The plan's configuration: when set (with ``validate_models``), a REF^I12's grouped-write plan, which
    needs no database, is decided here too (``adapters.hl7v2.plan``), off the commit thread."""

    def prepare(self, raw: bytes, *, too_large: int | None = None, limit: int | None = None) -> Prepared:
        """Decode, check, parse and map ``raw``; errors become the AE/AR to answer. ``too_large``: the size
        of a message the transport did not take in whole (``raw`` is its beginning), ``limit`` its limit."""
        try:
            header = read_header(raw)
        except HeaderError as exc:
            code = SEGMENT_SEQUENCE if exc.field == 0 else DATA_TYPE_ERROR
            location = Location("MSH", 1, exc.field) if exc.field else Location("MSH")
            return Prepared(raw, None, error=reject(code, exc.text, location))
        prepared = Prepared(raw, header)
        try:
            if too_large is not None:
                most = limit or self.max_message_bytes
                text = f"the message has {too_large} bytes; this interface takes at most {most}"
                raise reject(INTERNAL_ERROR, text)
            self._check_header(header)
            text = raw.decode(CHARSETS[header.charset or DEFAULT_CHARSET])
            message = parse(text, header, read=profiles.READ_SEGMENTS.get(header.message_type))
            kind = profiles.kind_of(message)
            profiles.check(message, kind)
            prepared.mapped = MAPS[kind](message, self.config)
            if self.validate_models:
                prepared.model_ok = model_verdicts(prepared.mapped.bundle)
                if self.policy is not None and kind == "REF":
                    prepared.plan, prepared.planned = self._plan(prepared), True
        except UnicodeDecodeError:
            problem = Problem(
                DATA_TYPE_ERROR, "the bytes are not valid in the MSH-18 character set", Location("MSH", 1, 18)
            )
            prepared.error = V2Error("AE", [problem])
        except V2Error as error:
            prepared.error = error
        except Exception as exc:  # a bug must not end a parse worker (nor the listener's connection): AE
            log.error("hl7v2: unexpected %s preparing a message: %s", type(exc).__name__, frames(exc))
            prepared.mapped, prepared.model_ok, prepared.plan = None, (), None
            prepared.error = V2Error("AE", [Problem(INTERNAL_ERROR, "the gateway could not map the message")])
        return prepared

    def _plan(self, prepared: Prepared) -> Plan | None:
        """The grouped write's plan (``adapters.hl7v2.plan``); None (the per-message path, whose commit judges
        the message as before) when planning meets anything unforeseen, e.g. a body orjson cannot write."""
        from adapters.hl7v2.plan import plan  # the FHIR core's validation: loaded on first use

        assert self.policy is not None
        try:
            return plan(prepared, self.policy)
        except Exception as exc:
            log.warning("hl7v2: a message not planned (unexpected %s): %s", type(exc).__name__, frames(exc))
            return None

    def _check_header(self, header: Header) -> None:
        if not header.control_id:
            raise reject(REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is required", Location("MSH", 1, 10))
        if not header.message_type:
            raise reject(REQUIRED_FIELD_MISSING, "MSH-9 (message type) is required", Location("MSH", 1, 9))
        if header.version not in profiles.VERSIONS:
            text = f"MSH-12 version must be one of {', '.join(profiles.VERSIONS)}"
            raise reject(UNSUPPORTED_VERSION, text, Location("MSH", 1, 12))
        if header.processing_id != self.processing_id:
            text = f"MSH-11 processing id must be {self.processing_id}"
            raise reject(UNSUPPORTED_PROCESSING_ID, text, Location("MSH", 1, 11))
        if header.charset_repeats or (header.charset and header.charset not in CHARSETS):
            text = f"MSH-18 must name one of: {', '.join(CHARSETS)}"
            raise reject(TABLE_VALUE_NOT_FOUND, text, Location("MSH", 1, 18))
        for number, condition in ((15, header.accept_ack_type), (16, header.application_ack_type)):
            if condition and condition not in ("AL", "NE", "ER", "SU"):
                raise reject(
                    TABLE_VALUE_NOT_FOUND, f"MSH-{number} is not a code of table 0155", Location("MSH", 1, number)
                )
