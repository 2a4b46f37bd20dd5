"""Parsing the FHIRPath subset of SearchParameter expressions into a small syntax tree.

Grammar and operator precedence follow https://hl7.org/fhirpath/N1/#grammar (FHIRPath N1, the
version R4 uses), restricted to what ``gateway.search.fhirpath`` compiles: identifiers, invocations,
function calls, string/number/boolean literals, parentheses, ``as``/``is``, ``|``, ``=``/``!=``,
``and``/``or``. Anything else is a ``FhirPathError`` here rather than a wrong answer later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class FhirPathError(ValueError):
    """An expression outside the supported subset, or one that does not fit the FHIR model."""


def parse(expression: str) -> Node:
    """The syntax tree of ``expression``."""
    return _Parser(expression).parse()


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)"
    r"|(?P<op>!=|[.|()=,]))"
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True, slots=True)
class Node:
    """One node: ``kind`` is ident, member, call, literal, binary, typeop, paren or this (the focus)."""

    kind: str
    name: str = ""
    args: tuple[Node, ...] = ()
    value: Any = None


class _Parser:
    """Recursive descent over FHIRPath precedence (https://hl7.org/fhirpath/N1/#operator-precedence)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise FhirPathError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
            kind = str(match.lastgroup)
            self.tokens.append((kind, match[kind]))
            pos = match.end()
        self.pos = 0

    def parse(self) -> Node:
        node = self._or()
        if self.pos != len(self.tokens):
            raise FhirPathError(f"unsupported syntax near {self.tokens[self.pos][1]!r}")
        return node

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise FhirPathError("unexpected end of expression")
        token = self.tokens[self.pos]
        if expected is not None and token[1] != expected:
            raise FhirPathError(f"expected {expected!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def _or(self) -> Node:
        node = self._and()
        while self._peek() == "or":
            self._take()
            node = Node("binary", "or", (node, self._and()))
        return node

    def _and(self) -> Node:
        node = self._equality()
        while self._peek() == "and":
            self._take()
            node = Node("binary", "and", (node, self._equality()))
        return node

    def _equality(self) -> Node:
        node = self._union()
        if self._peek() in ("=", "!="):
            op = self._take()[1]
            node = Node("binary", op, (node, self._union()))
        return node

    def _union(self) -> Node:
        node = self._type_op()
        while self._peek() == "|":
            self._take()
            node = Node("binary", "|", (node, self._type_op()))
        return node

    def _type_op(self) -> Node:
        node = self._postfix()
        if self._peek() in ("as", "is"):
            op = self._take()[1]
            node = Node("typeop", op, (node,), self._type_name())
        return node

    def _type_name(self) -> str:
        kind, name = self._take()
        if kind != "id":
            raise FhirPathError(f"expected a type name, found {name!r}")
        if name in ("FHIR", "System") and self._peek() == ".":
            self._take()
            return self._type_name()
        return name.strip("`")

    def _postfix(self) -> Node:
        node = self._term()
        while self._peek() == ".":
            self._take()
            node = self._invocation(node)
        return node

    def _term(self) -> Node:
        kind, text = self.tokens[self.pos] if self.pos < len(self.tokens) else ("", "")
        if kind == "str":
            self._take()
            body = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), text[1:-1])
            return Node("literal", value=body)
        if kind == "num":
            self._take()
            return Node("literal", value=float(text) if "." in text else int(text))
        if text in ("true", "false"):
            self._take()
            return Node("literal", value=text == "true")
        if text == "(":
            self._take()
            inner = self._or()
            self._take(")")
            return Node("paren", args=(inner,))
        return self._invocation(None)

    def _invocation(self, source: Node | None) -> Node:
        kind, name = self._take()
        if kind != "id":
            raise FhirPathError(f"expected a name, found {name!r}")
        name = name.strip("`")
        if self._peek() != "(":
            return Node("member", name, (source,)) if source is not None else Node("ident", name)
        self._take("(")
        args: list[Node] = []
        while self._peek() != ")":
            if args:
                self._take(",")
            if name in ("as", "ofType", "is"):
                # These take a type specifier, not an expression to evaluate.
                args.append(Node("literal", value=self._type_name()))
            else:
                args.append(self._or())
        self._take(")")
        return Node("call", name, (source if source is not None else Node("this"), *args))
