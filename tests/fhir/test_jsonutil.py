"""Bounded JSON parsing (gateway/jsonutil.py): nesting depth counted per container level."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway import jsonutil
from gateway.errors import BadRequest


def _nested(levels: int) -> Any:
    """A document of exactly ``levels`` nested containers, alternating objects and arrays."""
    value: Any = {"leaf": 1}
    for n in range(levels - 1):
        value = [value] if n % 2 == 0 else {"child": value}
    return value


@pytest.mark.parametrize("levels", [1, 2, 7, 64])
def test_documents_up_to_the_limit_pass(levels: int) -> None:
    assert jsonutil.loads_any(orjson.dumps(_nested(levels)), max_depth=64) == _nested(levels)


@pytest.mark.parametrize("levels", [65, 200, 1000])
def test_deeper_documents_are_400(levels: int) -> None:
    text = b"[" * (levels - 1) + b'{"leaf": 1}' + b"]" * (levels - 1)
    with pytest.raises(BadRequest, match="deeper than 64"):
        jsonutil.loads_any(text, max_depth=64)


def test_one_deep_branch_among_wide_shallow_ones_is_found() -> None:
    wide = {"entry": [{"resource": {"id": str(n)}} for n in range(500)]}
    wide["entry"].append({"resource": _nested(10)})
    jsonutil.check_depth(wide, 13)  # object, array, entry object, then the 10 levels of the deep one
    with pytest.raises(BadRequest):
        jsonutil.check_depth(wide, 12)


def test_scalars_and_empty_containers() -> None:
    jsonutil.check_depth(5, 1)
    jsonutil.check_depth({}, 1)
    with pytest.raises(BadRequest):
        jsonutil.check_depth({"a": {}}, 1)
