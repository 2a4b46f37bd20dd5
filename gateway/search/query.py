"""Query parameters → a typed search expression (https://hl7.org/fhir/R4/search.html).

``parse_query`` reads the ``(name, value)`` pairs of a search in order and returns a ``SearchQuery``:
the criteria (AND across parameters, https://hl7.org/fhir/R4/search.html#combining; OR across the
comma-separated values of one parameter) plus the result parameters (``_sort``, ``_count``,
``_include``, ...; https://hl7.org/fhir/R4/search.html#return). Nothing here touches SQL: ``sql.py``
turns the expression into a statement for the dialect at hand.

Parameter names are resolved in the registry for every searched type; a name unknown to one of them
is unknown. Unknown names are ignored and reported (lenient) or rejected (strict,
``Prefer: handling=strict``, https://hl7.org/fhir/R4/search.html#errors). Known names used wrongly
(bad modifier, prefix, date, number, _count...) are always a ``BadRequest`` naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.errors import BadRequest
from gateway.fhir.resource_types import SERVED_TYPE_SET, SERVED_TYPES
from gateway.search.registry import Registry
from gateway.search.values import (
    MissingValue,
    TextValue,
    TokenValue,
    Value,
    parse_date,
    parse_missing,
    parse_number,
    parse_quantity,
    parse_reference,
    parse_string,
    parse_token,
    split_unescaped,
    unescape,
)
from gateway.types import QueryParams

ID = "_id"
LAST_UPDATED = "_lastUpdated"

MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text"}),
    "string": frozenset({"missing", "exact", "contains", "text"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "reference": frozenset({"missing", "identifier"}),
    "uri": frozenset({"missing", "above", "below", "contains"}),
    ID: frozenset({"not"}),
    LAST_UPDATED: frozenset(),
}
"""Modifiers answered per type (https://hl7.org/fhir/R4/search.html#modifiers); ``reference`` also
takes ``:[type]``. Anything else (``:in``, ``:below`` on tokens, ``:of-type``...) is a 400."""

SORTABLE = frozenset({"string", "date", "token", "number", "uri", "quantity", ID, LAST_UPDATED})
SUMMARY_MODES = frozenset({"true", "false", "text", "data", "count"})
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})
SINGLETONS = frozenset({"_count", "_sort", "_summary", "_total", "_elements", "_cursor", "_type", "_contained"})
UNSUPPORTED = frozenset({"_text", "_content", "_list", "_query", "_filter", "_containedType"})
RESULT_PARAMS = (
    frozenset(
        {"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements", "_cursor", "_contained"}
    )
    | UNSUPPORTED
)
PASSED_THROUGH = frozenset({"_format", "_pretty"})
"""Handled by the HTTP layer; kept in the paging links so every page comes back the same way."""


@dataclass(frozen=True, slots=True)
class Criterion:
    """``code[:modifier]=v1,v2``: a resource matches when any value matches (OR)."""

    name: str
    """The parameter as written (with modifier), for messages."""
    code: str
    kind: str
    """The search parameter type, or ``_id``/``_lastUpdated`` (resource columns, no index table)."""
    modifier: str | None
    values: tuple[Value, ...]
    target_type: str | None = None
    """The ``:[type]`` modifier of a reference parameter."""

    @property
    def negated(self) -> bool:
        """True when the criterion matches resources lacking a matching index row."""
        if self.modifier == "not":
            return True
        return self.modifier == "missing" and isinstance(self.values[0], MissingValue) and self.values[0].missing


@dataclass(frozen=True, slots=True)
class ChainCriterion:
    """``ref[:Type].param=v``: the reference points at a resource of a target type that matches
    (https://hl7.org/fhir/R4/search.html#chaining); one criterion per candidate target type."""

    name: str
    code: str
    targets: tuple[tuple[str, Criterion], ...]


@dataclass(frozen=True, slots=True)
class HasCriterion:
    """``_has:Type:ref:param=v``: some ``Type`` whose ``ref`` points here matches
    (https://hl7.org/fhir/R4/search.html#has)."""

    name: str
    source_type: str
    ref_code: str
    inner: Criterion


Condition = Criterion | ChainCriterion | HasCriterion


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``_sort`` key (https://hl7.org/fhir/R4/search.html#sort)."""

    code: str
    kind: str
    descending: bool


@dataclass(frozen=True, slots=True)
class Include:
    """``_include``/``_revinclude`` ``Type:param[:target]`` or ``*`` (https://hl7.org/fhir/R4/search.html#include).

    ``source_type``/``param`` None stand for ``*``.
    """

    source_type: str | None
    param: str | None
    target: str | None
    iterate: bool


@dataclass
class SearchQuery:
    """A parsed search: what to match and how to return it."""

    types: tuple[str, ...]
    criteria: tuple[Condition, ...] = ()
    count: int = 20
    sort: tuple[SortKey, ...] = ()
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    summary: str | None = None
    total: str | None = None
    elements: tuple[str, ...] | None = None
    cursor: str | None = None
    used: QueryParams = field(default_factory=list)
    """The parameters that took effect, as received and in order (for the self link), without ``_cursor``."""
    ignored: tuple[str, ...] = ()
    """Names of unknown parameters that were ignored (lenient handling)."""


def parse_query(
    registry: Registry,
    resource_type: str | None,
    params: QueryParams,
    *,
    base_url: str,
    strict: bool,
    default_count: int,
    max_count: int,
) -> SearchQuery:
    """Parse the query of ``GET [base]/[type]?...`` (or ``GET [base]?...`` when ``resource_type`` is None)."""
    return _Parser(registry, base_url, strict).parse(resource_type, params, default_count, max_count)


class _Parser:
    def __init__(self, registry: Registry, base_url: str, strict: bool) -> None:
        self.registry = registry
        self.base_url = base_url
        self.strict = strict

    def parse(self, resource_type: str | None, params: QueryParams, default_count: int, max_count: int) -> SearchQuery:
        types = self._types(resource_type, params)
        seen: set[str] = set()
        query = SearchQuery(types=types, count=default_count)
        criteria: list[Condition] = []
        ignored: list[str] = []
        for name, value in params:
            base_name = name.split(":", 1)[0]
            if base_name in SINGLETONS:
                if base_name in seen:
                    raise BadRequest(f"Parameter '{base_name}' may appear only once")
                seen.add(base_name)
            if base_name in PASSED_THROUGH:
                query.used.append((name, value))
            elif base_name == "_type":
                if resource_type is not None:
                    self._unknown(name, ignored)
                else:
                    query.used.append((name, value))
            elif value == "":
                continue  # an empty value asks for nothing (HAPI and most servers ignore it too)
            elif base_name in RESULT_PARAMS:
                self._result_param(base_name, name, value, query, max_count)
                if base_name != "_cursor":
                    query.used.append((name, value))
            else:
                condition = self._condition(name, value, types)
                if condition is None:
                    self._unknown(name, ignored)
                else:
                    criteria.append(condition)
                    query.used.append((name, value))
        query.criteria = tuple(criteria)
        query.ignored = tuple(ignored)
        return query

    def _unknown(self, name: str, ignored: list[str]) -> None:
        if self.strict:
            raise BadRequest(f"Unknown search parameter '{name}'")
        ignored.append(name)

    def _types(self, resource_type: str | None, params: QueryParams) -> tuple[str, ...]:
        if resource_type is not None:
            if resource_type not in SERVED_TYPE_SET:
                raise BadRequest(f"Resource type '{resource_type}' is not served")
            return (resource_type,)
        listed = [v for k, v in params if k == "_type"]
        if not listed or not listed[0]:
            return SERVED_TYPES
        names = [t.strip() for t in listed[0].split(",") if t.strip()]
        unknown = [t for t in names if t not in SERVED_TYPE_SET]
        if unknown:
            raise BadRequest(f"Parameter '_type': unknown resource type(s) {', '.join(unknown)}")
        return tuple(dict.fromkeys(names))

    # -- result parameters (https://hl7.org/fhir/R4/search.html#return) -------------------------------

    def _result_param(self, base_name: str, name: str, value: str, out: SearchQuery, max_count: int) -> None:
        """Record a result parameter (one of ``RESULT_PARAMS``) in ``out``."""
        types = out.types
        modifier = name.partition(":")[2]
        if modifier and base_name not in ("_include", "_revinclude"):
            raise BadRequest(f"Parameter '{base_name}' takes no modifier (got '{name}')")
        if base_name == "_count":
            out.count = _count(value, max_count)
        elif base_name == "_sort":
            out.sort = tuple(self._sort_key(part.strip(), types) for part in value.split(",") if part.strip())
        elif base_name in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise BadRequest(f"Parameter '{name}': unsupported modifier ':{modifier}' (use :iterate)")
            include = self._include(name, value, iterate=bool(modifier))
            if base_name == "_include":
                out.includes = (*out.includes, include)
            else:
                out.revincludes = (*out.revincludes, include)
        elif base_name == "_summary":
            if value not in SUMMARY_MODES:
                raise BadRequest(f"Parameter '_summary': '{value}' is not one of {', '.join(sorted(SUMMARY_MODES))}")
            out.summary = value
        elif base_name == "_total":
            if value not in TOTAL_MODES:
                raise BadRequest(f"Parameter '_total': '{value}' is not one of {', '.join(sorted(TOTAL_MODES))}")
            out.total = value
        elif base_name == "_elements":
            out.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif base_name == "_cursor":
            out.cursor = value
        elif base_name == "_contained":
            if value != "false":
                raise BadRequest("Parameter '_contained': searching contained resources is not supported")
        else:
            raise BadRequest(f"Parameter '{base_name}' is not supported by this server")

    def _sort_key(self, text: str, types: tuple[str, ...]) -> SortKey:
        descending = text.startswith("-")
        code = text[1:] if descending else text
        kind = self._kind(code, types)
        if kind is None:
            raise BadRequest(f"Parameter '_sort': unknown search parameter '{code}'")
        if kind not in SORTABLE:
            raise BadRequest(f"Parameter '_sort': cannot sort by '{code}' (a {kind} parameter)")
        return SortKey(code, kind, descending)

    def _include(self, name: str, value: str, *, iterate: bool) -> Include:
        if value == "*":
            return Include(None, None, None, iterate)
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise BadRequest(f"Parameter '{name}': '{value}' is not Type:param[:targetType] or *")
        source_type, param_code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source_type not in SERVED_TYPE_SET:
            raise BadRequest(f"Parameter '{name}': unknown resource type '{source_type}'")
        if target is not None and target not in SERVED_TYPE_SET:
            raise BadRequest(f"Parameter '{name}': unknown target type '{target}'")
        if param_code == "*":
            return Include(source_type, None, target, iterate)
        param = self.registry.get(source_type, param_code)
        if param is None or param.type != "reference":
            raise BadRequest(f"Parameter '{name}': '{param_code}' is not a reference parameter of {source_type}")
        return Include(source_type, param_code, target, iterate)

    # -- criteria ---------------------------------------------------------------------------------------

    def _kind(self, code: str, types: tuple[str, ...]) -> str | None:
        """The parameter type of ``code`` on every type of ``types`` (None when unknown to any)."""
        if code in (ID, LAST_UPDATED):
            return code
        kinds = set()
        for res_type in types:
            param = self.registry.get(res_type, code)
            if param is None:
                return None
            kinds.add(param.type)
        if len(kinds) != 1:
            raise BadRequest(f"Parameter '{code}' has different types across {', '.join(types)}")
        return kinds.pop()

    def _targets(self, code: str, types: tuple[str, ...]) -> tuple[str, ...]:
        targets: dict[str, None] = {}
        for res_type in types:
            param = self.registry.get(res_type, code)
            if param is not None:
                targets.update(dict.fromkeys(t for t in param.targets if t in SERVED_TYPE_SET))
        return tuple(targets)

    def _expressionless(self, code: str, types: tuple[str, ...]) -> bool:
        return any((p := self.registry.get(t, code)) is not None and p.expression is None for t in types)

    def _condition(self, name: str, value: str, types: tuple[str, ...]) -> Condition | None:
        if name.startswith("_has:"):
            return self._has(name, value, types)
        head, dot, chain = name.partition(".")
        code, _, modifier = head.partition(":")
        kind = self._kind(code, types)
        if kind is None:
            return None
        if dot:
            if kind != "reference":
                raise BadRequest(f"Parameter '{name}': only reference parameters can be chained")
            return self._chain(name, code, modifier or None, chain, value, types)
        return self.criterion(name, code, kind, modifier or None, value, types)

    def criterion(
        self, name: str, code: str, kind: str, modifier: str | None, value: str, types: tuple[str, ...]
    ) -> Criterion:
        """The criterion ``code[:modifier]=value`` of parameter type ``kind`` on ``types``."""
        if kind in ("composite", "special") or (kind not in (ID, LAST_UPDATED) and self._expressionless(code, types)):
            raise BadRequest(f"Parameter '{code}' ({kind}) is not supported by this server")
        target_type: str | None = None
        if modifier is not None and kind == "reference" and modifier in SERVED_TYPE_SET:
            target_type, modifier = modifier, None
        elif modifier is not None and modifier not in MODIFIERS[kind]:
            raise BadRequest(f"Parameter '{name}': modifier ':{modifier}' is not supported on {kind} parameters")
        if modifier == "missing":
            return Criterion(name, code, kind, modifier, (parse_missing(name, value),))
        if target_type is None and kind == "reference" and modifier is None:
            targets = self._targets(code, types)
            target_type = targets[0] if len(targets) == 1 else None
        parts = [p for p in split_unescaped(value, ",") if p]
        if not parts:
            raise BadRequest(f"Parameter '{name}': no value")
        values = tuple(self._value(name, kind, modifier, part, target_type) for part in parts)
        return Criterion(name, code, kind, modifier, values, target_type)

    def _value(self, name: str, kind: str, modifier: str | None, text: str, target_type: str | None) -> Value:
        if kind in ("token", ID) and modifier == "text":
            return parse_string(text)
        if kind == ID:
            return TokenValue(None, unescape(text))
        if kind == "token" or (kind == "reference" and modifier == "identifier"):
            return parse_token(text)
        if kind == "string":
            return TextValue(unescape(text)) if modifier == "exact" else parse_string(text)
        if kind in ("date", LAST_UPDATED):
            return parse_date(name, text)
        if kind == "number":
            return parse_number(name, text)
        if kind == "quantity":
            return parse_quantity(name, text)
        if kind == "reference":
            return parse_reference(name, text, base_url=self.base_url, target=target_type)
        return TextValue(unescape(text))  # uri: case-sensitive, as written

    def _chain(
        self, name: str, code: str, type_modifier: str | None, chain: str, value: str, types: tuple[str, ...]
    ) -> ChainCriterion | None:
        if "." in chain:
            raise BadRequest(f"Parameter '{name}': only one level of chaining is supported")
        if type_modifier is not None and type_modifier not in SERVED_TYPE_SET:
            raise BadRequest(f"Parameter '{name}': ':{type_modifier}' is not a resource type")
        candidates = (type_modifier,) if type_modifier else self._targets(code, types)
        inner_code, _, inner_modifier = chain.partition(":")
        targets: list[tuple[str, Criterion]] = []
        for target in candidates:
            kind = self._kind(inner_code, (target,))
            if kind is None:
                continue
            if kind == "reference" and inner_modifier and inner_modifier not in MODIFIERS["reference"]:
                raise BadRequest(f"Parameter '{name}': chained type modifiers are not supported")
            inner = self.criterion(name, inner_code, kind, inner_modifier or None, value, (target,))
            targets.append((target, inner))
        if not targets:
            return None
        return ChainCriterion(name, code, tuple(targets))

    def _has(self, name: str, value: str, types: tuple[str, ...]) -> HasCriterion | None:
        parts = name.split(":")
        if "_has" in parts[1:]:
            raise BadRequest(f"Parameter '{name}': nested _has is not supported")
        if len(parts) not in (4, 5) or not all(parts):
            raise BadRequest(f"Parameter '{name}': expected _has:Type:reference:parameter")
        _, source_type, ref_code, inner_code = parts[:4]
        modifier = parts[4] if len(parts) == 5 else None
        if source_type not in SERVED_TYPE_SET:
            raise BadRequest(f"Parameter '{name}': unknown resource type '{source_type}'")
        ref = self.registry.get(source_type, ref_code)
        if ref is None or ref.type != "reference":
            raise BadRequest(f"Parameter '{name}': '{ref_code}' is not a reference parameter of {source_type}")
        if ref.targets and not set(ref.targets) & set(types):
            raise BadRequest(f"Parameter '{name}': {source_type}.{ref_code} never points to {', '.join(types)}")
        kind = self._kind(inner_code, (source_type,))
        if kind is None:
            return None
        inner = self.criterion(name, inner_code, kind, modifier, value, (source_type,))
        return HasCriterion(name, source_type, ref_code, inner)


def _count(value: str, max_count: int) -> int:
    """``_count`` clamped to ``max_count`` (https://hl7.org/fhir/R4/search.html#count)."""
    try:
        count = int(value)
    except ValueError:
        raise BadRequest(f"Parameter '_count': '{value}' is not a non-negative integer") from None
    if count < 0:
        raise BadRequest(f"Parameter '_count': '{value}' is not a non-negative integer")
    return min(count, max_count)
