"""A bounded memo of hl7apy's verdict on the fields it accepted (docs/hl7v2.md "Throughput").

hl7apy's tolerant parse with ``find_groups=False`` (``hl7apy.parser.parse_message``, 1.3.x) reads the MSH
context (field separator, encoding characters MSH-2, structure MSH-9, version MSH-12), then parses every
segment on its own (``parse_segment``: a ``Segment`` of that name, then ``parse_fields``), and every
non-empty field repetition on its own (``parse_field(text, name, version, encoding_chars, level,
reference)``, the reference being that of the field's position in the segment); an empty field is skipped.
Nothing one field's parse does depends on another field or segment, so hl7apy's verdict on a message is
that of its first refused segment name or field, and its verdict on a field is a pure function of (the
MSH context, the segment name, the field's position, the field's text).

County traffic repeats fields (the sending and receiving applications, the referring clinician, the
plan's IN1, common DG1 codes, authorization periods, even a member's name and birth date fields are
shared by many), so ``mappings.hl7v2.message.parse_with_hl7apy`` hands hl7apy each message with the fields
this memo has seen accepted in the same context emptied (a segment whose fields were all seen, and whose
name was, is left out; MSH-1, MSH-2, MSH-9 and MSH-12, the context itself, are always kept). When hl7apy
accepts that message, all its fields are remembered. A refusal is never remembered: a refused field is
parsed again every time, so the error (the first refused element, its exception) is hl7apy's own.
tests/hl7v2/test_verdicts.py compares the verdicts with and without the memo on a corpus.

Settled contexts (session 6): before it parses a segment, ``parse_message`` reads the MSH context, builds
the ``Message`` of the structure MSH-9 names (its own MSH-1 and MSH-2 included) and, after the segments,
adds each one to it; in tolerant mode (no cardinality check) each of these steps is a pure function of the
context, and of the segment's name for the add. Once hl7apy accepted a message in a context, those steps
accept every later message of that context whose segment names it accepted in it too, so such a message
(``settled``) is handed to hl7apy's own ``parse_segments`` (what ``parse_message`` calls for its segments,
with the same version, encoding characters and validation level), MSH-9 and MSH-12 emptied in its MSH as
well (``bare``: their text is the context): about 1 ms of hl7apy objects per message (the ``Message``,
the MSH's type and version fields) not built again. A segment name or context not accepted before takes
``parse_message``, whole.

Components (session 8): most fields no memo answers are composites whose components recur (the
assigning authority and type of an identifier, a name's given name, an address's city, state and zip),
and in tolerant mode hl7apy judges a composite field (its datatype neither a base one nor ``varies``)
component by component: ``parse_components`` parses each non-blank component on its own (a
``Component`` named ``<datatype>_<n>`` with the reference of that name, then its subcomponents), and
adding it to the field checks only that component (the cardinality checks are strict mode's). So its
verdict on a component is a pure function of (context, segment name, field position, component index,
component text), and the fields not answered whole are handed with the components seen accepted
emptied (a repetition left with none is left out, a field left with none is emptied). Only components
hl7apy names in the field's datatype are remembered (``_shape``: the datatype read from hl7apy's own
reference of the field's position, with hl7apy's reading of MSH-12); a base or ``varies`` field, an
unknown position or component is handed whole. tests/hl7v2/test_verdicts.py compares the verdicts with
and without the memo on a corpus whose composite fields share components in every combination.

Values hl7apy judges by their place only (session 12): what the memos above leave of a county message is
mostly its own values (an identifier, a name, a street, a referral id, the control id, a note, the birth
date, the send time). In tolerant mode hl7apy's verdict on one value does not depend on its text: it
builds the value of a base datatype with ``hl7apy.factories.datatype_factory``, which returns an ST of
the text when the datatype's constructor raises ``ValueError`` (strict mode re-raises it); the textual
types (ST, ID, IS, FT, TX, GTS, WD) only store their text (the maximum length is strict mode's), and the
temporal and numeric ones (DT, TM, DTM, NM, SI) raise nothing else: the offset and fraction their
constructors could refuse are first read by patterns that admit only what they accept (hl7apy 1.3.x
``utils._split_offset``, ``_get_timestamp_format``), and everything else fails in ``strptime``,
``Decimal`` or ``int`` with a ``ValueError``. Nothing else of the parse reads a value's text but its
splitting on the separators and ``str.strip`` (blank components and subcomponents are skipped). So a
non-blank component without a subcomponent separator whose one value hl7apy types with a base datatype
(``_leaf``: hl7apy's own parse of a probe with that position's reference), and likewise a non-blank base
field without any separator, is judged as every other such value at its position: once hl7apy accepted
one in a context, the others are not handed to it (the memo keys them by ``VALUE`` instead of their text).
A component holding subcomponents, a ``varies`` or unknown position is handed as before.
tests/hl7v2/test_verdicts.py holds hl7apy to it: its factory on hostile values of every base datatype of
2.5 and 2.5.1, and the verdicts with and without the memo on messages with hostile values at every
position of the segments the profiles read (whitespace of every kind, escapes, control characters, long
values, impossible dates, offsets and fractions, numbers in every form).

Bounded (``LIMIT`` entries, least recently used first out, for fields and for components), per process
(each parse worker has its own).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import hl7apy.core
import hl7apy.parser
from hl7apy.consts import VALIDATION_LEVEL

LIMIT = 65_536
"""Fields remembered per process (at ~100 bytes each, a few MiB)."""

Context = tuple[str, str, str, str]
"""What hl7apy reads from the MSH before parsing: field separator, encoding characters (MSH-2), message
type (MSH-9, which names the structure) and version (MSH-12), as raw text."""

MSH_CONTEXT = frozenset((0, 1, 8, 11))
"""Positions of an MSH split on its field separator that are never emptied: the name, MSH-2, MSH-9, MSH-12."""

VALUE = "\r"
"""What the memo keys one value of a base datatype by instead of its text (module docstring; never the text
of a field: segments are split on it)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """How hl7apy parses the field at one position of a segment in a context (``_shape``)."""

    components: frozenset[int]
    """The component indices hl7apy names in the field's composite datatype (empty: a base datatype)."""
    single: frozenset[int]
    """Of those, the components whose one value hl7apy types with a base datatype (not a composite)."""
    base: bool = False
    """The field is of a base datatype (not ``varies``)."""


@dataclass
class Stats:
    """Non-empty fields answered from the memo (``hits``) and handed to hl7apy (``misses``) since the last
    reset."""

    hits: int = 0
    misses: int = 0
    settled: int = 0
    """Messages parsed by their segments alone (``settled``)."""
    components: int = 0
    """Non-blank components of the fields handed to hl7apy that the component memo answered."""
    judged: int = 0
    """Settled messages with nothing left for hl7apy (``judged``): not handed to it at all."""

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


Key = tuple[Context, str, int, str]
_accepted: OrderedDict[Key, None] = OrderedDict()
ComponentKey = tuple[Context, str, int, int, str]
"""(context, segment name, field position as split, component index from 1, component text)."""
_components: OrderedDict[ComponentKey, None] = OrderedDict()
_shapes: dict[tuple[Context, str, int], Shape | None] = {}
"""Per field position of a context: how hl7apy parses it; None when it knows no datatype there or it is
``varies`` (module docstring)."""
CONTEXTS = 256
"""Contexts remembered as accepted (an interface has a few: one per sender application, type and version)."""
_contexts: OrderedDict[Context, None] = OrderedDict()
stats = Stats()
_lock = threading.Lock()  # the listener prepares in threads when it has no worker processes
enabled = True
"""False: every message goes to hl7apy whole (tests and the bench's before/after comparison)."""


def context_of(msh: str) -> Context | None:
    """The memo context of an MSH segment's text; None when it names none (hl7apy judges the whole message)."""
    if len(msh) < 4 or not msh.startswith("MSH"):
        return None
    fields = msh.split(msh[3])
    if len(fields) < 12:
        return None
    return msh[3], fields[1], fields[8], fields[11]


def hand(context: Context, segments: list[str]) -> list[str]:
    """The segments to hand to hl7apy: ``segments`` (MSH first) with the fields seen accepted emptied, and
    those left with nothing unseen left out (module docstring)."""
    if not enabled:
        return segments
    with _lock:
        return _hand(context, segments)


def _hand(context: Context, segments: list[str]) -> list[str]:
    separator = context[0]
    out: list[str] = []
    for number, segment in enumerate(segments):
        fields = segment.split(separator)
        name = fields[0]
        unseen = (context, name, 0, name) not in _accepted
        for position in range(1, len(fields)):
            text = fields[position]
            if not text.strip() or (number == 0 and position in MSH_CONTEXT):
                continue
            key = (context, name, position, text)
            if key in _accepted:
                _accepted.move_to_end(key)
                stats.hits += 1
                fields[position] = ""
                continue
            if _one_value(context, name, position, text) and (context, name, position, VALUE) in _accepted:
                _accepted.move_to_end((context, name, position, VALUE))
                stats.hits += 1
                fields[position] = ""
                continue
            stats.misses += 1
            left = _unseen_components(context, name, position, text)
            fields[position] = left
            unseen = unseen or bool(left)
        if number == 0 or unseen:
            out.append(separator.join(fields))
    return out


def _unseen_components(context: Context, name: str, position: int, text: str) -> str:
    """``text`` (a field not answered whole) with the components seen accepted emptied, repetitions left
    with none left out; "" when none is left; ``text`` itself when it is not a composite field."""
    shape = _shape(context, name, position)
    if shape is None or not shape.components:
        return text
    component, repetition, subcomponent = context[1][0], context[1][1], context[1][3]
    kept: list[str] = []
    for rep in text.split(repetition):
        parts = rep.split(component)
        left = False
        for index, part in enumerate(parts, 1):
            if not part.strip():
                continue
            key = (context, name, position, index, _keyed(shape, index, part, subcomponent))
            if index in shape.components and key in _components:
                _components.move_to_end(key)
                stats.components += 1
                parts[index - 1] = ""
            else:
                left = True
        if left:
            kept.append(component.join(parts))
    return repetition.join(kept)


def _keyed(shape: Shape, index: int, part: str, subcomponent: str) -> str:
    """What the component memo keys component ``index`` by: ``VALUE`` for one holding one value of a base
    datatype (no subcomponent separator), else its text (module docstring)."""
    return VALUE if index in shape.single and subcomponent not in part else part


def _one_value(context: Context, name: str, position: int, text: str) -> bool:
    """Field ``position`` is of a base datatype and ``text`` one value (no separator)."""
    if any(separator in text for separator in context[1][:4]):
        return False
    shape = _shape(context, name, position)
    return shape is not None and shape.base


def _leaf(name: str, version: str, reference: object) -> str | None:
    """The datatype hl7apy gives the one value of a component ``name`` (e.g. ``XPN_1``, whose value is its
    ``FN_1``) holding a single non-blank value: its own parse of a probe; None when it is not one value."""
    component = hl7apy.parser.parse_component("x", name, None, version, None, VALIDATION_LEVEL.TOLERANT, reference)
    children = component.children
    if len(children) != 1 or not isinstance(children[0], hl7apy.core.SubComponent):
        return None
    datatype: str | None = children[0].datatype
    return datatype


def _shape(context: Context, name: str, position: int) -> Shape | None:
    """How hl7apy parses field ``position`` of segment ``name`` (as split: for MSH, split position p is
    MSH-(p+1)) in ``context``: the component indices it names in a composite datatype and which of them hold
    one value of a base datatype, or a base datatype; None when neither (``varies``, an unknown segment or
    position). Remembered."""
    where = (context, name, position)
    try:
        return _shapes[where]
    except KeyError:
        pass
    shape: Shape | None = None
    if len(context[1]) >= 4 and not context[1][0].isspace() and name.isalnum() and len(name) == 3:
        try:
            version = context[3].strip().split(context[1][0])[0]  # as hl7apy reads MSH-12 (get_message_info)
            tolerant = VALIDATION_LEVEL.TOLERANT
            field_name = f"{name}_{position + 1 if name == 'MSH' else position}"
            segment = hl7apy.core.Segment(name, version=version, validation_level=tolerant)
            reference = segment.structure_by_name[field_name]["ref"]
            field = hl7apy.core.Field(field_name, version=version, validation_level=tolerant, reference=reference)
            datatype = field.datatype
            if datatype and datatype != "varies" and not hl7apy.core.is_base_datatype(datatype, version):
                names = field.structure_by_name
                components = frozenset(i for i in range(1, 100) if f"{datatype}_{i}" in names)
                leaves = {i: _leaf(f"{datatype}_{i}", version, names[f"{datatype}_{i}"]["ref"]) for i in components}
                single = frozenset(
                    i for i, leaf in leaves.items() if leaf is not None and hl7apy.core.is_base_datatype(leaf, version)
                )
                shape = Shape(components, single)
            elif datatype and datatype != "varies":
                shape = Shape(frozenset(), frozenset(), base=True)
        except Exception:  # whatever hl7apy cannot look up is simply handed whole
            shape = None
    if len(_shapes) >= LIMIT:
        _shapes.clear()
    _shapes[where] = shape
    return shape


def remember(context: Context, segments: list[str]) -> None:
    """Remember every segment name and non-empty field of ``segments`` as accepted in ``context`` (call only
    after hl7apy accepted what ``hand`` gave it for them)."""
    if not enabled:
        return
    separator = context[0]
    keys = [
        (context, fields[0], position, text)
        for fields in (segment.split(separator) for segment in segments)
        for position, text in enumerate(fields)
        if position == 0 or text.strip()
    ]
    with _lock:
        component, repetition, subcomponent = (
            (context[1][0], context[1][1], context[1][3]) if len(context[1]) >= 4 else ("", "", "")
        )
        for key in keys:
            if key in _accepted:
                _accepted.move_to_end(key)
                continue
            _accepted[key] = None
            _, name, position, text = key
            shape = _shape(context, name, position) if position and component else None
            if shape is not None and shape.components:
                for rep in text.split(repetition):
                    for index, part in enumerate(rep.split(component), 1):
                        if part.strip():
                            keyed = (context, name, position, index, _keyed(shape, index, part, subcomponent))
                            _components[keyed] = None
                            _components.move_to_end(keyed)
            elif shape is not None and _one_value(context, name, position, text):
                _accepted[(context, name, position, VALUE)] = None
                _accepted.move_to_end((context, name, position, VALUE))
        while len(_accepted) > LIMIT:
            _accepted.popitem(last=False)
        while len(_components) > LIMIT:
            _components.popitem(last=False)
        _contexts[context] = None
        _contexts.move_to_end(context)
        while len(_contexts) > CONTEXTS:
            _contexts.popitem(last=False)


def settled(context: Context, handed: list[str]) -> bool:
    """Whether hl7apy accepted a message in ``context`` before and every segment name of ``handed`` (what
    ``hand`` gave, MSH first) in it: then only the fields left in ``handed`` can change its verdict
    (module docstring)."""
    if not enabled:
        return False
    separator = context[0]
    with _lock:
        if context not in _contexts:
            return False
        names = (segment.split(separator, 1)[0] for segment in handed[1:])
        if not all((context, name, 0, name) in _accepted for name in names):
            return False
        stats.settled += 1
        return True


def judged(context: Context, handed: list[str]) -> bool:
    """Whether ``handed`` (what ``hand`` gave for a message of a settled context) is its MSH alone with nothing
    but the context in it: hl7apy accepted exactly that (the MSH of a message of the context, whose MSH-1
    and MSH-2 are the context's separators) before, so there is nothing left for it to judge."""
    if len(handed) != 1 or any(text for n, text in enumerate(handed[0].split(context[0])) if n not in MSH_CONTEXT):
        return False
    with _lock:
        stats.judged += 1
    return True


def bare(msh: str, context: Context) -> str:
    """A handed MSH of a settled context with MSH-9 and MSH-12 emptied too (hl7apy accepted them in it; MSH-1
    and MSH-2 are the separators, which hl7apy reads from the segment itself)."""
    fields = msh.split(context[0])
    for position in (8, 11):
        if position < len(fields):
            fields[position] = ""
    return context[0].join(fields)


def clear() -> None:
    """Forget every verdict and reset the counters."""
    with _lock:
        _accepted.clear()
        _components.clear()
        _shapes.clear()
        _contexts.clear()
        stats.hits = stats.misses = stats.settled = stats.components = stats.judged = 0
