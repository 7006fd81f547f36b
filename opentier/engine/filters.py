"""Metadata filters: a small JSON grammar, validated, compiled to one parameterised SQL condition.

A filter is a JSON object; every key must hold (an implicit ``and``)::

    {"lang": "en"}                                   equality (shorthand)
    {"lang": ["en", "fr"]}                           any of (shorthand)
    {"lang": {"eq": "en"}}                           equality
    {"lang": {"in": ["en", "fr"]}}                   any of
    {"year": {"range": {"gte": 2000, "lt": 2010}}}   bounds: gt, gte, lt, lte
    {"author": {"exists": true}}                     present and not null (false: absent or null)
    {"and": [filter, ...]}, {"or": [filter, ...]}    nesting

A field is a metadata key, or a dotted path into nested objects (``"source.kind"``). Values are
strings, numbers or booleans. Equality also matches a list that holds the value (``tags``). Numbers
compare as numbers and strings as strings (byte order): a range matches only values of its bounds'
type. Values and field names travel as bind parameters only; the SQL text holds nothing the
client wrote. The condition applies to ``<alias>.metadata`` of ``intelligence.chunks``, which holds
the document's metadata.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentier.errors import InvalidRequestError
from opentier.retrieval import SqlFragment

#: Deepest nesting of ``and``/``or`` inside each other.
MAX_DEPTH = 4
#: Most field conditions in one filter (each ``in`` value counts as one).
MAX_CLAUSES = 64
#: Longest field path and string value, in characters.
MAX_FIELD_CHARS = 128
MAX_VALUE_CHARS = 1024

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_:@$-]*$")
_OPERATORS = ("eq", "in", "range", "exists")
_BOUNDS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LOGICAL = ("and", "or")

Scalar = str | float | int | bool


def compile_filter(filters: Mapping[str, Any] | None, alias: str, prefix: str = "flt") -> SqlFragment:
    """The condition ``filters`` puts on ``<alias>.metadata``; TRUE for no filter.

    Raises :class:`InvalidRequestError` naming the offending part (``filters.and[1].year.range``).
    """
    if not filters:
        return SqlFragment.true()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", alias) or not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
        raise ValueError(f"bad alias {alias!r} or prefix {prefix!r}")
    compiler = _Compiler(f"{alias}.metadata", prefix)
    sql = compiler.node(filters, "filters", depth=0)
    return SqlFragment(sql, compiler.params)


@dataclass
class _Compiler:
    column: str
    prefix: str
    params: dict[str, Any] = field(default_factory=dict)
    clauses: int = 0

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def at(self, path: list[str], operator: str = "#>") -> str:
        """The value at ``path`` (``#>``: as jsonb, ``#>>``: as text)."""
        return f"({self.column} {operator} CAST({self.bind(path)} AS text[]))"

    def count(self, where: str, amount: int = 1) -> None:
        self.clauses += amount
        if self.clauses > MAX_CLAUSES:
            raise InvalidRequestError(f"{where}: the filter has more than {MAX_CLAUSES} conditions")

    # -- structure ---------------------------------------------------------------------------------

    def node(self, value: Any, where: str, depth: int) -> str:
        if not isinstance(value, Mapping):
            raise InvalidRequestError(f"{where}: a filter must be an object, not {_kind(value)}")
        if not value:
            raise InvalidRequestError(f"{where}: an empty filter object; omit it to match everything")
        parts = [self.entry(str(key), item, where, depth) for key, item in value.items()]
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def entry(self, key: str, value: Any, where: str, depth: int) -> str:
        if key in _LOGICAL:
            return self.logical(key, value, f"{where}.{key}", depth + 1)
        path = self.path(key, f"{where}.{key}")
        return self.condition(path, value, f"{where}.{key}")

    def logical(self, op: str, value: Any, where: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise InvalidRequestError(f"{where}: and/or nest more than {MAX_DEPTH} levels deep")
        if not isinstance(value, list) or not value:
            raise InvalidRequestError(f"{where}: {op} takes a non-empty list of filters")
        parts = [self.node(item, f"{where}[{i}]", depth) for i, item in enumerate(value)]
        return parts[0] if len(parts) == 1 else "(" + f" {op.upper()} ".join(parts) + ")"

    def path(self, key: str, where: str) -> list[str]:
        segments = key.split(".")
        if len(key) > MAX_FIELD_CHARS or not all(_SEGMENT.match(s) for s in segments):
            raise InvalidRequestError(
                f"{where}: {key!r} is not a field name; use letters, digits and _ - : @ $, with dots "
                f"between nested keys (at most {MAX_FIELD_CHARS} characters), or and/or"
            )
        return segments

    # -- conditions --------------------------------------------------------------------------------

    def condition(self, path: list[str], value: Any, where: str) -> str:
        if isinstance(value, list):
            return self.any_of(path, value, where)
        if not isinstance(value, Mapping):
            return self.equal(path, _scalar(value, where), where)
        if len(value) != 1 or next(iter(value)) not in _OPERATORS:
            raise InvalidRequestError(
                f"{where}: a condition object holds exactly one operator of {', '.join(_OPERATORS)}; "
                f"got {', '.join(map(str, value)) or 'none'}"
            )
        op, arg = next(iter(value.items()))
        where = f"{where}.{op}"
        if op == "eq":
            return self.equal(path, _scalar(arg, where), where)
        if op == "in":
            if not isinstance(arg, list):
                raise InvalidRequestError(f"{where}: in takes a list of values, not {_kind(arg)}")
            return self.any_of(path, arg, where)
        if op == "range":
            return self.range(path, arg, where)
        if not isinstance(arg, bool):
            raise InvalidRequestError(f"{where}: exists takes true or false, not {_kind(arg)}")
        self.count(where)
        present = f"COALESCE(jsonb_typeof({self.at(path)}), 'null') <> 'null'"
        return present if arg else f"NOT ({present})"

    def equal(self, path: list[str], value: Scalar, where: str) -> str:
        """Containment (``@>``): the metadata GIN index serves it; a list holding the value matches too."""
        self.count(where)
        alone, listed = _nest(path, value), _nest(path, [value])
        return (
            f"({self.column} @> CAST({self.bind(alone)} AS jsonb)"
            f" OR {self.column} @> CAST({self.bind(listed)} AS jsonb))"
        )

    def any_of(self, path: list[str], values: list[Any], where: str) -> str:
        if not values:
            raise InvalidRequestError(f"{where}: an empty list matches nothing; give at least one value")
        scalars = [_scalar(item, f"{where}[{i}]") for i, item in enumerate(values)]
        self.count(where, len(scalars))
        docs = [_nest(path, v) for v in scalars] + [_nest(path, [v]) for v in scalars]
        return f"{self.column} @> ANY(CAST({self.bind(docs)} AS jsonb[]))"

    def range(self, path: list[str], bounds: Any, where: str) -> str:
        if not isinstance(bounds, Mapping) or not bounds:
            raise InvalidRequestError(
                f"{where}: range takes an object of bounds ({', '.join(_BOUNDS)}), not {_kind(bounds)}"
            )
        unknown = [str(key) for key in bounds if key not in _BOUNDS]
        if unknown:
            raise InvalidRequestError(
                f"{where}: unknown bound {', '.join(unknown)}; use {', '.join(_BOUNDS)}"
            )
        kinds = {_orderable(value, f"{where}.{key}") for key, value in bounds.items()}
        if len(kinds) > 1:
            raise InvalidRequestError(f"{where}: bounds must be all numbers or all strings")
        self.count(where)
        target = self.at(path)
        if kinds == {"number"}:
            tests = [
                f"{target} {_BOUNDS[key]} CAST({self.bind(json.dumps(_number(value)))} AS jsonb)"
                for key, value in bounds.items()
            ]
            return "(" + " AND ".join([f"jsonb_typeof({target}) = 'number'", *tests]) + ")"
        text = f'{self.at(path, "#>>")} COLLATE "C"'
        tests = [f"{text} {_BOUNDS[key]} {self.bind(value)}" for key, value in bounds.items()]
        return "(" + " AND ".join([f"jsonb_typeof({target}) = 'string'", *tests]) + ")"


def _nest(path: list[str], value: Any) -> str:
    """``{"a": {"b": value}}`` as JSON, for containment."""
    doc: Any = _number(value) if isinstance(value, float) else value
    for segment in reversed(path):
        doc = {segment: doc}
    return json.dumps(doc)


def _number(value: float | int) -> float | int:
    """Integral floats (every number of a protobuf Struct) written as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequestError(f"{where}: {value} is not a number a filter can compare")
        return value
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidRequestError(f"{where}: a value longer than {MAX_VALUE_CHARS} characters")
        return value
    hint = "; use exists to test for a missing value" if value is None else ""
    raise InvalidRequestError(
        f"{where}: {_kind(value)} is not a value to compare with (string, number, true/false){hint}"
    )


def _orderable(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequestError(f"{where}: a range bound is a number or a string, not {_kind(value)}")
    _scalar(value, where)
    return "string" if isinstance(value, str) else "number"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
