"""A column term that filters the rows a ``rid`` probe found without choosing the index (SQLite ``+column``).

Access narrowing (``gateway.auth.access``) probes ``idx_reference`` by ``rid`` and keeps the rows of some
parameters (``param IN ('patient', 'asserter')``). SQLite 3.40 turns such an ``IN`` list, when it is a
second key column of the probe's index and sits in a correlated subquery nested inside another one, into
an ephemeral table rebuilt on every outer row: a check of one row cost 130-300 µs instead of 7 µs
(measured on the ``bench.smart_overhead`` store). A ``rid`` has a handful of reference rows, so seeking on
``rid`` alone and testing the parameter on those rows is the cheaper plan; the unary ``+`` takes the
term out of SQLite's index choices (https://www.sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_).
PostgreSQL plans these probes well and gets the plain column.

The element knows its dialect only when compiled, so code that builds one expression for every dialect
(the narrowing of a grant) can use it without being told which database it will run on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["filter_only"]


class _FilterOnly(FunctionElement[Any]):
    """``+column`` on SQLite, ``column`` elsewhere."""

    name = "filter_only"
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(_FilterOnly)
def _plain(element: _FilterOnly, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_FilterOnly, "sqlite")
def _unary_plus(element: _FilterOnly, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(element.clauses, **kw)}"


def filter_only(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` as a term that may filter rows but must not pick the index on SQLite (a unary ``+``)."""
    return _FilterOnly(column)
