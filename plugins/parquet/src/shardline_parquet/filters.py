"""Row filters for the Parquet source: a small, safe expression language compiled to pyarrow.

Two forms are accepted in ``[source] filter``:

1. **An expression string** with Python-like syntax, parsed with :mod:`ast` (never evaluated)::

       filter = "country == 'FR' and amount >= 10"
       filter = "kind in ('click', 'view') and not (user_id is None)"
       filter = "col('event time') >= timestamp('2024-01-01T00:00:00')"

   Allowed: column names (bare identifiers, or ``col("any name")``), literals (numbers, strings,
   ``True``/``False``/``None``, lists/tuples of them, ``date("2024-01-31")``,
   ``timestamp("2024-01-31T12:00:00")``), comparisons ``== != < <= > >=`` (chains like
   ``1 <= x < 5`` too), ``in`` / ``not in`` a list, ``is None`` / ``is not None``, ``and``,
   ``or``, ``not`` and parentheses. Anything else is refused with a message saying what.

2. **A list in pyarrow's DNF form** (as ``pyarrow.parquet.read_table(filters=...)``)::

       filter = [["country", "==", "FR"], ["amount", ">=", 10]]          # AND of the terms
       filter = [[["country", "==", "FR"]], [["country", "==", "DE"]]]   # OR of ANDs

Filters are pushed down to pyarrow.dataset: row groups whose statistics exclude every row are not
read at all.
"""

from __future__ import annotations

import ast
import datetime as dt
import operator
from collections.abc import Callable
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_MIRROR: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.Eq, ast.NotEq: ast.NotEq, ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE,
}  # fmt: skip


class FilterSyntaxError(ValueError):
    """The filter is not valid; the message says what is wrong."""


class _Column:
    def __init__(self, name: str) -> None:
        self.name = name


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, bool | int | float | str | type(None)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("date", "timestamp")
    ):
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant):
            raise FilterSyntaxError(f"{node.func.id}() takes one string, like {node.func.id}('2024-01-31')")
        text = node.args[0].value
        try:
            if node.func.id == "date":
                return dt.date.fromisoformat(str(text))
            return dt.datetime.fromisoformat(str(text))
        except ValueError:
            raise FilterSyntaxError(f"{node.func.id}({text!r}) is not an ISO-8601 {node.func.id}") from None
    raise FilterSyntaxError(f"expected a literal value, got {ast.unparse(node)!r}")


def _operand(node: ast.expr) -> _Column | Any:
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return _Column(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "col":
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant):
            raise FilterSyntaxError("col() takes one string, the column name, like col('event time')")
        return _Column(str(node.args[0].value))
    return _literal(node)


def _compare(left: ast.expr, op: ast.cmpop, right: ast.expr) -> pc.Expression:
    a, b = _operand(left), _operand(right)
    if isinstance(op, ast.Is | ast.IsNot):
        if not isinstance(a, _Column) or b is not None:
            raise FilterSyntaxError("'is' is only for 'column is None' / 'column is not None'")
        expr = ds.field(a.name).is_null()
        return ~expr if isinstance(op, ast.IsNot) else expr
    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(a, _Column) or not isinstance(b, list):
            raise FilterSyntaxError("'in' needs a column on the left and a list on the right: x in (1, 2)")
        expr = ds.field(a.name).isin(b)
        return ~expr if isinstance(op, ast.NotIn) else expr
    if type(op) not in _COMPARE:
        raise FilterSyntaxError(f"unsupported operator {type(op).__name__}")
    if isinstance(a, _Column) and isinstance(b, _Column):
        return _COMPARE[type(op)](ds.field(a.name), ds.field(b.name))
    if isinstance(a, _Column):
        return _COMPARE[type(op)](ds.field(a.name), b)
    if isinstance(b, _Column):
        return _COMPARE[_MIRROR[type(op)]](ds.field(b.name), a)
    raise FilterSyntaxError(f"a comparison needs a column: {ast.unparse(left)} vs {ast.unparse(right)}")


def _compile(node: ast.expr) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v) for v in node.values]
        expr = parts[0]
        for part in parts[1:]:
            expr = (expr & part) if isinstance(node.op, ast.And) else (expr | part)
        return expr
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_compile(node.operand)
    if isinstance(node, ast.Compare):
        terms = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            terms.append(_compare(left, op, right))
            left = right
        expr = terms[0]
        for term in terms[1:]:
            expr = expr & term
        return expr
    if isinstance(node, ast.Name) or (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "col"):
        column = _operand(node)
        if isinstance(column, _Column):
            return ds.field(column.name) == True  # noqa: E712 - a boolean column used as a condition
    raise FilterSyntaxError(f"unsupported expression {ast.unparse(node)!r}")


def compile_filter(spec: str | list[Any] | None) -> pc.Expression | None:
    """Compile a filter (expression string or DNF list) to a pyarrow expression; None for no filter.

    Raises :class:`FilterSyntaxError` with a message for the user.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            tree = ast.parse(spec.strip(), mode="eval")
        except SyntaxError as exc:
            raise FilterSyntaxError(f"cannot parse {spec!r}: {exc.msg}") from None
        return _compile(tree.body)
    if isinstance(spec, list):
        return _compile_dnf(spec)
    raise FilterSyntaxError("expected an expression string or a list of [column, op, value] terms")


def _tuples(value: Any) -> Any:
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    ):
        return (value[0], value[1], value[2])
    if isinstance(value, list):
        return [_tuples(v) for v in value]
    raise FilterSyntaxError(f"expected [column, op, value] terms, got {value!r}")


def _compile_dnf(spec: list[Any]) -> pc.Expression:
    if not spec:
        raise FilterSyntaxError("the filter list is empty")
    try:
        return pq.filters_to_expression(_tuples(spec))
    except FilterSyntaxError:
        raise
    except Exception as exc:
        raise FilterSyntaxError(f"invalid filter list: {exc}") from None


def filter_columns(spec: str | list[Any] | None) -> list[str]:
    """The column names a (valid) filter refers to, each once; ``[]`` for no filter."""
    names: list[str] = []
    if isinstance(spec, str):
        tree = ast.parse(spec.strip(), mode="eval")
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        functions = {id(c.func) for c in calls}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "col":
                if node.args and isinstance(node.args[0], ast.Constant):
                    names.append(str(node.args[0].value))
            elif (
                isinstance(node, ast.Name)
                and id(node) not in functions
                and node.id not in ("True", "False", "None")
            ):
                names.append(node.id)
    elif isinstance(spec, list):
        terms = _tuples(spec)
        stack = [terms]
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                names.append(item[0])
            else:
                stack.extend(reversed(item))
    return list(dict.fromkeys(names))
