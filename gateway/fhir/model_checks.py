"""The R4B library's own per-model checks, with what they look up computed once per model class.

``fhir_core``'s ``FHIRAbstractModel`` (the base of every ``fhir.resources.R4B`` model the validation on
write builds: the resource and each complex element the verdict memo does not answer) runs three checks
of its own on every model it builds:

- ``reject_null_complex_elements`` (a "before" model validator): no ``null`` inside a list of a complex
  type (https://hl7.org/fhir/R4/json.html#null: null only as a placeholder in primitive arrays);
- ``_validate_required_primitive_elements`` (after): a required primitive is present, or its ``_field``
  extension explains why not (https://hl7.org/fhir/R4/extensibility.html#Special-Case);
- ``_validate_one_of_many`` (after): a choice element ``nnn[x]`` has one type at most, and one when
  required (https://hl7.org/fhir/R4/formats.html#choice).

Each walks its class's field table on every call (every field through pydantic's ``model_fields`` shim,
``is_list_type``/``is_primitive_type`` on every annotation, the choice and required tables rebuilt):
measured on the ingest benchmark's fresh resources, about 40 % of the model pass. Those tables are
constants of a built class, so ``install`` replaces the three by versions that compute them once per
class and then do only the per-instance part: the same verdicts, the same errors (type, message,
location, input) in the same order; tests/fhir/test_model_checks.py compares them with the library's
on every model class of the served types and on random mutations of their examples.

``install`` replaces the "before" validator and the "after" one (``validate_after_model_construction``,
which calls the two "after" checks) on ``FHIRAbstractModel``, and the two check methods themselves.
pydantic binds a model validator when it builds a class (looking it up by name on the bases), so models
built before ``install`` keep the library's validators (correct, only slower); ``gateway.fhir.validation``
installs at import, before it builds its first model, and a test checks that every served model uses
these. ``suspended()`` routes everything back to the library (tests and measurements).
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydantic
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

_MISSING = object()
_installed = threading.Lock()
_library: dict[str, Any] = {}
"""The library's functions, by name, once ``install`` has run."""
_use_library = False
"""Set inside ``suspended()``: every check runs the library's own function."""

_complex_lists: dict[type, tuple[tuple[str, str | None], ...]] = {}
_choices: dict[type, tuple[tuple[list[str], bool], ...]] = {}
_required: dict[type, tuple[tuple[str, str | None, Any], ...]] = {}


def _complex_list_fields(cls: type[FHIRAbstractModel]) -> tuple[tuple[str, str | None], ...] | None:
    """(field name, alias) of ``cls``'s lists of a complex type: the fields the library's loop keeps."""
    found = _complex_lists.get(cls)
    if found is None:
        if not cls.__pydantic_complete__:
            return None  # fields may still change (a forward reference not yet resolved)
        found = _complex_lists[cls] = tuple(
            (name, field.alias)
            for name, field in cls.model_fields.items()
            if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
        )
    return found


def _reject_null_complex_elements(cls: type[FHIRAbstractModel], data: Any) -> Any:
    """``FHIRAbstractModel.reject_null_complex_elements`` over the fields found once per class."""
    fields = None if _use_library else _complex_list_fields(cls)
    if fields is None:
        return _library["reject_null_complex_elements"](cls, data)
    if not isinstance(data, dict):
        return data
    errors: list[InitErrorDetails] = []
    for name, alias in fields:
        key = alias if alias and alias in data else name
        value = data.get(key)
        if isinstance(value, list) and any(item is None for item in value):
            errors.append(
                {
                    "type": PydanticCustomError(
                        "list_type", "None is not allowed as an element of {field}", {"field": key}
                    ),
                    "loc": (key,),
                    "input": value,
                }
            )
    if errors:
        raise ValidationError.from_exception_data(cls.__name__, errors)
    return data


def _choice_table(model: FHIRAbstractModel) -> tuple[tuple[list[str], bool], ...] | None:
    """(fields of one choice element, required) per choice element of ``model``'s class."""
    cls = type(model)
    found = _choices.get(cls)
    if found is None:
        fields_of = cls.model_fields
        table: list[tuple[list[str], bool]] = []
        for prefix, fields in model.get_one_of_many_fields().items():
            extra = fields_of[fields[0]].json_schema_extra
            if not isinstance(extra, dict) or extra.get("one_of_many") != prefix:
                return None  # the library's own assertion decides, on every call
            table.append((fields, extra["one_of_many_required"] is True))
        found = _choices[cls] = tuple(table)
    return found


def _validate_one_of_many(self: FHIRAbstractModel) -> None:
    """``FHIRAbstractModel._validate_one_of_many`` over the choice table found once per class."""
    table = None if _use_library else _choice_table(self)
    if table is None:
        _library["_validate_one_of_many"](self)
    else:
        _check_choices(self, table)


def _check_choices(self: FHIRAbstractModel, table: tuple[tuple[list[str], bool], ...]) -> None:
    for fields, required in table:
        found = False
        for field in fields:
            if getattr(self, field, None) is not None:
                if found:
                    raise ValueError(f"Any of one field value is expected from this list {fields}, but got multiple!")
                found = True
        if required and not found:
            raise ValueError(f"Expect any of field value from this list {fields}.")


def _required_table(model: FHIRAbstractModel) -> tuple[tuple[str, str | None, Any], ...] | None:
    """(field name, its ``__ext`` sibling, alias) per required primitive of ``model``'s class."""
    cls = type(model)
    found = _required.get(cls)
    if found is None:
        required = model.get_required_fields()
        if not required:
            found = ()
        else:
            aliases = model.get_alias_mapping()
            if any(name not in aliases or aliases[name] not in cls.model_fields for name, _ in required):
                return None  # the library's own look-up decides (and fails), on every call
            found = tuple((aliases[name], ext, cls.model_fields[aliases[name]].alias) for name, ext in required)
        _required[cls] = found
    return found


def _validate_required_primitive_elements(self: FHIRAbstractModel) -> None:
    """``FHIRAbstractModel._validate_required_primitive_elements`` over the table found once per class."""
    table = None if _use_library else _required_table(self)
    if table is None:
        _library["_validate_required_primitive_elements"](self)
    else:
        _check_required(self, table)


def _check_required(self: FHIRAbstractModel, table: tuple[tuple[str, str | None, Any], ...]) -> None:
    errors: list[InitErrorDetails] = []
    for field_key, ext, alias in table:
        value = getattr(self, field_key, _MISSING)
        if value not in (_MISSING, None):
            continue
        ext_value: Any = getattr(self, ext, _MISSING) if ext is not None else None
        missing_ext = True
        if ext_value not in (_MISSING, None):
            if isinstance(ext_value, dict):
                missing_ext = len(ext_value.get("extension", [])) == 0
            elif ext_value.extension and len(ext_value.extension) > 0:
                missing_ext = False
        if missing_ext:
            errors.append(
                {
                    "type": PydanticCustomError(
                        "model_field_validation.missing",
                        "Value for the field '{field_name}' is required.",
                        {"field_name": alias},
                    ),
                    "loc": (alias,),
                    "input": value,
                }
            )
    if errors:
        raise ValidationError.from_exception_data(type(self).__name__, errors)


def _validate_after_model_construction(self: FHIRAbstractModel) -> FHIRAbstractModel:
    """``FHIRAbstractModel.validate_after_model_construction`` (the "after" validator): both checks, called
    directly (not looked up on the instance) when the class overrides neither (every R4B class)."""
    if _use_library or not _is_plain(type(self)):
        return typing.cast(FHIRAbstractModel, _library["validate_after_model_construction"](self))
    _validate_required_primitive_elements(self)
    _validate_one_of_many(self)
    return self


_plain: set[type] = set()


def _is_plain(cls: type[FHIRAbstractModel]) -> bool:
    """True (remembered once true) when ``cls`` uses this module's two "after" checks as they are."""
    if cls in _plain:
        return True
    base = typing.cast(Any, cls)
    plain = (
        base._validate_required_primitive_elements is _validate_required_primitive_elements
        and base._validate_one_of_many is _validate_one_of_many
    )
    if plain:
        _plain.add(cls)
    return plain


def install() -> None:
    """Put the three checks in place on ``FHIRAbstractModel`` (once per process; idempotent)."""
    with _installed:
        if _library:
            return
        base = typing.cast(Any, FHIRAbstractModel)
        _library["reject_null_complex_elements"] = base.__dict__["reject_null_complex_elements"].__func__
        _library["_validate_one_of_many"] = base._validate_one_of_many
        _library["_validate_required_primitive_elements"] = base._validate_required_primitive_elements
        _library["validate_after_model_construction"] = base.validate_after_model_construction
        before: Any = classmethod(_reject_null_complex_elements)
        base.reject_null_complex_elements = pydantic.model_validator(mode="before")(before)
        after: Any = _validate_after_model_construction
        base.validate_after_model_construction = pydantic.model_validator(mode="after")(after)
        base._validate_one_of_many = _validate_one_of_many
        base._validate_required_primitive_elements = _validate_required_primitive_elements


def installed() -> bool:
    """True once ``install`` has run in this process."""
    return bool(_library)


def in_use(model_class: type[FHIRAbstractModel]) -> bool:
    """True when ``model_class`` (built) runs this module's "before" and "after" validators."""
    validators = model_class.__pydantic_decorators__.model_validators
    before = validators.get("reject_null_complex_elements")
    after = validators.get("validate_after_model_construction")
    return (
        before is not None
        and getattr(before.func, "__func__", None) is _reject_null_complex_elements
        and after is not None
        and after.func is _validate_after_model_construction
    )


@contextmanager
def suspended() -> Iterator[None]:
    """The library's own three checks inside the block (tests and measurements; not for concurrent use)."""
    global _use_library
    install()
    _use_library = True
    try:
        yield
    finally:
        _use_library = False
