"""Memoized look-ups for hl7apy: the same parse, without reloading the HL7 reference per element.

hl7apy (https://crs4.github.io/hl7apy/, 1.3.x) builds an object per segment, field, component and
subcomponent, and each object asks again for things that never change while the process runs:
``load_library(version)`` (an ``importlib.import_module`` per call: ~500 calls per REF^I12),
``is_base_datatype`` (~1,500 calls, each through ``load_library``), the structure dictionaries built from a
reference tuple (``ElementFinder._parse_structure``: a field's children, cardinalities and names, rebuilt
for every field instance), the datatype factory table (a ``dict.copy()`` per subcomponent value), the
check of the message's encoding characters (once per parser call: ~240 per message) and a linear scan of
the ``cls_attrs`` list, and a ``super()`` object, on every attribute assignment (~5,000 per message).

``install()`` replaces those by memoized equivalents that return the very objects hl7apy would have
computed: the same modules, the same booleans, equal structure dictionaries (shared between elements;
hl7apy only reads them after building them), the same factories, the same exceptions for what it refuses
(an unknown version or name is never cached: it raises again). The element tree, every value object and
every check of the tolerant parse are hl7apy's own. ``tests/hl7v2/test_hl7apy_cache.py`` parses a corpus
(valid messages, each refusal the gateway relies on, random segments) with and without ``install()`` and
compares the trees (``to_er7``) and the exceptions.

Why patch instead of calling other entry points: hl7apy has no public hook for its reference look-ups;
its modules import ``load_library`` and ``is_base_datatype`` by name, so each binding is replaced where it
is read. ``install()`` is idempotent and acts only on hl7apy 1.3.x whose functions are the ones it wraps (another
release leaves the library untouched: the parse is then only slower);
``uninstall()`` restores the originals (tests, ``bench/hl7v2.py``'s before/after comparison).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import metadata
from types import FunctionType, ModuleType
from typing import Any

import hl7apy
import hl7apy.core
import hl7apy.factories
import hl7apy.parser

_STRUCTURE_CACHE_LIMIT = 4096
"""Structures cached by reference identity; references built per element (rare) could grow it, so it is
cleared when it reaches this size (the library's own references refill it at once)."""

_originals: dict[tuple[Any, str], Any] = {}
_libraries: dict[str, ModuleType] = {}
_base: dict[tuple[str | None, str], bool] = {}
_structures: dict[tuple[int, int], tuple[Any, dict[str, Any]]] = {}
_factories: dict[str, dict[str, Any]] = {}
_checked_encodings: set[tuple[str | None, ...]] = set()


def installed() -> bool:
    """Whether the memoized look-ups are in place."""
    return bool(_originals)


def install() -> bool:
    """Put the memoized look-ups in place (idempotent). False when this hl7apy lacks one of the functions
    they replace (nothing is changed then)."""
    if _originals:
        return True
    targets = _targets()
    if targets is None:
        return False
    for (module, name), replacement in targets.items():
        _originals[(module, name)] = getattr(module, name)
        setattr(module, name, replacement)
    for cls in _element_classes():
        _originals[(cls, "cls_attrs")] = cls.__dict__["cls_attrs"]
        cls.cls_attrs = frozenset(cls.__dict__["cls_attrs"])
    return True


def uninstall() -> None:
    """Restore hl7apy's own functions and drop every cache."""
    for (owner, name), original in _originals.items():
        setattr(owner, name, original)
    _originals.clear()
    for cache in (_libraries, _base, _structures, _factories):
        cache.clear()
    _checked_encodings.clear()


SUPPORTED_RELEASES = "1.3."
"""The hl7apy releases whose functions the replacements reproduce (two are hl7apy 1.3's bodies)."""


def _targets() -> dict[tuple[Any, str], Any] | None:
    if not metadata.version("hl7apy").startswith(SUPPORTED_RELEASES):
        return None
    original_load = getattr(hl7apy, "load_library", None)
    original_factory = getattr(hl7apy.factories, "datatype_factory", None)
    finder = getattr(hl7apy.core, "ElementFinder", None)
    original_structure = getattr(finder, "_parse_structure", None)
    original_encodings = getattr(hl7apy.parser, "_get_encoding_chars", None)
    element = getattr(hl7apy.core, "Element", None)
    original_setattr = element.__dict__.get("__setattr__") if isinstance(element, type) else None
    field = getattr(hl7apy.core, "Field", None)
    original_field_setattr = field.__dict__.get("__setattr__") if isinstance(field, type) else None
    functions = (
        original_load,
        original_factory,
        original_structure,
        original_encodings,
        original_setattr,
        original_field_setattr,
    )
    if not all(isinstance(f, FunctionType) for f in functions) or not _element_classes():
        return None
    assert original_load is not None and original_factory is not None
    assert original_structure is not None and original_encodings is not None
    assert isinstance(field, type) and original_field_setattr is not None
    load_library = _memo_load_library(original_load)
    is_base_datatype = _memo_is_base_datatype(load_library)
    return {
        (hl7apy, "load_library"): load_library,
        (hl7apy.core, "load_library"): load_library,
        (hl7apy.factories, "load_library"): load_library,
        (hl7apy.core, "is_base_datatype"): is_base_datatype,
        (hl7apy.parser, "is_base_datatype"): is_base_datatype,
        (hl7apy.factories, "datatype_factory"): _memo_datatype_factory(load_library),
        (hl7apy.core, "datatype_factory"): _memo_datatype_factory(load_library),
        (finder, "_parse_structure"): staticmethod(_memo_parse_structure(original_structure)),
        (hl7apy.parser, "_get_encoding_chars"): _memo_encoding_chars(original_encodings),
        (hl7apy.core.Element, "__setattr__"): _element_setattr(hl7apy.core.ElementList),
        (field, "__setattr__"): _field_setattr(field, original_field_setattr),
    }


def _element_classes() -> list[Any]:
    """hl7apy's element classes that declare their own ``cls_attrs`` list."""
    core = hl7apy.core
    classes = [getattr(core, name, None) for name in ("Element", "SupportComplexDataType", "SubComponent", "Segment")]
    found = [c for c in classes if isinstance(c, type) and isinstance(c.__dict__.get("cls_attrs"), list)]
    return found if len(found) == len(classes) else []


def _memo_load_library(original: Callable[[str], ModuleType]) -> Callable[[str], ModuleType]:
    def load_library(version: str) -> ModuleType:
        """hl7apy.load_library, remembered per version (an unsupported version raises every time)."""
        try:
            return _libraries[version]
        except (KeyError, TypeError):
            library = original(version)
            _libraries[version] = library
            return library

    return load_library


def _memo_is_base_datatype(load_library: Callable[[str], ModuleType]) -> Callable[..., bool]:
    def is_base_datatype(datatype: str | None, version: str | None = None) -> bool:
        """hl7apy.core.is_base_datatype, remembered per (datatype, version)."""
        if version is None:
            version = hl7apy.get_default_version()
        key = (datatype, version)
        try:
            return _base[key]
        except KeyError:
            answer = bool(load_library(version).is_base_datatype(datatype))
            _base[key] = answer
            return answer
        except TypeError:  # an unhashable datatype: ask the library every time, as hl7apy does
            return bool(load_library(version).is_base_datatype(datatype))

    return is_base_datatype


def _memo_datatype_factory(load_library: Callable[[str], ModuleType]) -> Callable[..., Any]:
    """hl7apy.factories.datatype_factory with its table built once per version (hl7apy copies the base
    datatype table and overrides five entries on every call); the body is hl7apy 1.3's."""
    factories_module = hl7apy.factories

    def table(version: str) -> dict[str, Any]:
        try:
            return _factories[version]
        except KeyError:
            factories = dict(load_library(version).get_base_datatypes())
            overrides = {
                "DT": factories_module.date_factory,
                "TM": factories_module.timestamp_factory,
                "DTM": factories_module.datetime_factory,
                "NM": factories_module.numeric_factory,
                "SI": factories_module.sequence_id_factory,
            }
            factories.update({k: v for k, v in overrides.items() if k in factories})
            _factories[version] = factories
            return factories

    def datatype_factory(datatype: str, value: Any, version: str | None = None, validation_level: Any = None) -> Any:
        from hl7apy.validation import Validator

        if validation_level is None:
            validation_level = hl7apy.get_default_validation_level()
        if version is None:
            version = hl7apy.get_default_version()
        base_datatypes = load_library(version).get_base_datatypes()
        factories = table(version)
        try:
            factory = factories[datatype]
            if isinstance(factory, FunctionType):
                return factory(value, base_datatypes[datatype], validation_level=validation_level)
            return factory(value, validation_level=validation_level)
        except KeyError:
            raise factories_module.InvalidDataType(datatype) from None
        except ValueError:
            if Validator.is_strict(validation_level):
                raise
            return factories["ST"](value)

    return datatype_factory


def _memo_parse_structure(original: Callable[[Any, Any], dict[str, Any]]) -> Callable[[Any, Any], dict[str, Any]]:
    def parse_structure(element: Any, reference: Any) -> dict[str, Any]:
        """ElementFinder._parse_structure, remembered per (reference, child classes) object identity."""
        key = (id(reference), id(element.child_classes))
        hit = _structures.get(key)
        if hit is not None and hit[0] is reference:
            return dict(hit[1])
        data = original(element, reference)
        if len(_structures) >= _STRUCTURE_CACHE_LIMIT:
            _structures.clear()
        _structures[key] = (reference, data)  # keeps ``reference`` alive, so its id is not reused
        return dict(data)

    return parse_structure


def _element_setattr(element_list: type) -> Callable[[Any, str, Any], None]:
    """hl7apy 1.3's ``Element.__setattr__`` with ``object.__setattr__`` for its ``super().__setattr__`` (the
    next class after Element in every element's MRO is ``object``): no ``super`` object per assignment."""
    set_attribute = object.__setattr__

    def __setattr__(self: Any, name: str, value: Any) -> None:  # noqa: N807 (the method it replaces)
        if name in self.cls_attrs:
            if name == "children":
                children: Any = []
                if not isinstance(value, element_list):
                    children = value
                    value = element_list(self)
                set_attribute(self, name, value)
                for child in children:
                    self.add(child)
            else:
                set_attribute(self, name, value)
        elif hasattr(self, "children"):
            self.children.set(name, value, 0)

    return __setattr__


def _field_setattr(field: type, original: Callable[[Any, str, Any], None]) -> Callable[[Any, str, Any], None]:
    """hl7apy 1.3's ``Field.__setattr__`` without its detour for the field's plain attributes.

    hl7apy's goes through ``Field._do_traversal("set", ...)``: a ``super(Field, self).__setattr__`` (that is
    ``Element.__setattr__``, which stores a ``cls_attrs`` name in the instance) inside a ``try`` that reads a
    ``ChildNotFound`` as a traversal name (``PID_3_1``). A plain attribute of ``cls_attrs`` (not ``children``,
    which adds children, nor a property such as ``value`` or ``datatype``, whose setters parse) is stored
    with ``object.__setattr__``, which raises nothing hl7apy would catch: the same assignment, without the two
    calls, the ``super`` object and the ``try`` (~80 per REF^I12, most of them in ``Element.__init__``).
    Every other name takes hl7apy's own method."""
    plain = frozenset(
        name
        for name in field.cls_attrs  # type: ignore[attr-defined]
        if name != "children" and not hasattr(inspect.getattr_static(field, name, None), "__set__")
    )
    set_attribute = object.__setattr__

    def __setattr__(self: Any, name: str, value: Any) -> None:  # noqa: N807 (the method it replaces)
        if name in plain:
            set_attribute(self, name, value)
        else:
            original(self, name, value)

    return __setattr__


def _memo_encoding_chars(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def get_encoding_chars(encoding_chars: Any, version: Any) -> Any:
        """hl7apy.parser._get_encoding_chars without re-checking a set of separators already found valid."""
        if type(encoding_chars) is dict:
            get = encoding_chars.get
            key = (get("FIELD"), get("COMPONENT"), get("SUBCOMPONENT"), get("REPETITION"), get("ESCAPE"))
            if key in _checked_encodings:
                return encoding_chars
            result = original(encoding_chars, version)  # raises for what hl7apy refuses: never remembered
            _checked_encodings.add(key)
            return result
        return original(encoding_chars, version)

    return get_encoding_chars
