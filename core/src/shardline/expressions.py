"""A small, safe expression language compiled to pyarrow compute expressions.

Used by the Parquet source's ``[source] filter`` (pushed down to pyarrow.dataset) and by the
``filter`` and ``set`` steps of ``[[transform]]`` (evaluated over each Arrow batch). Text is parsed
with :mod:`ast` (never evaluated) and compiled to a :class:`pyarrow.compute.Expression`.

**Conditions** (``filter``), with Python-like syntax::

    country == 'FR' and amount >= 10
    kind in ('click', 'view') and not (user_id is None)
    col('event time') >= timestamp('2024-01-01T00:00:00')
    amount * 100 > 5 and lower(country) != 'fr'

Allowed: column names (bare identifiers, or ``col("any name")``), literals (numbers, strings,
``True``/``False``/``None``, lists/tuples of them, ``date("2024-01-31")``,
``timestamp("2024-01-31T12:00:00")``), comparisons ``== != < <= > >=`` (chains like
``1 <= x < 5`` too), ``in`` / ``not in`` a list, ``is None`` / ``is not None``, ``and``,
``or``, ``not`` and parentheses. A bare boolean column is a condition too. Anything else is refused
with a message saying what (:class:`FilterSyntaxError`).

**Values** (``set = { cents = "amount * 100" }``, and either side of a comparison): columns,
literals, ``+ - * /`` (overflow is an error, not a wrap-around; ``/`` of integers is an integer
division as in SQL), unary ``-``, a condition (a boolean value), and these functions (pyarrow
compute kernels, https://arrow.apache.org/docs/python/api/compute.html):
``lower(s)``, ``upper(s)``, ``length(s)``, ``concat(a, b, ...)`` (strings), ``abs(x)``,
``round(x)``, ``floor(x)``, ``ceil(x)``, ``coalesce(a, b, ...)``, ``if_else(cond, a, b)``,
``cast(x, 'int64')`` (an Arrow type name, as ``[[transform]] cast``), ``is_null(x)``.

A condition can also be a list in pyarrow's DNF form (as ``pyarrow.parquet.read_table(filters=...)``)::

    [["country", "==", "FR"], ["amount", ">=", 10]]          # AND of the terms
    [[["country", "==", "FR"]], [["country", "==", "DE"]]]   # OR of ANDs
"""

from __future__ import annotations

import ast
import datetime as dt
import operator
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
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
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], pc.Expression]] = {
    ast.Add: pc.add_checked,
    ast.Sub: pc.subtract_checked,
    ast.Mult: pc.multiply_checked,
    ast.Div: pc.divide_checked,
}
_FUNCTIONS: dict[str, tuple[int, Callable[..., pc.Expression]]] = {
    # name: (arity, negative = at least that many; kernel)
    "lower": (1, pc.utf8_lower),
    "upper": (1, pc.utf8_upper),
    "length": (1, pc.utf8_length),
    "abs": (1, pc.abs_checked),
    "round": (1, pc.round),
    "floor": (1, pc.floor),
    "ceil": (1, pc.ceil),
    "is_null": (1, pc.is_null),
    "coalesce": (-1, pc.coalesce),
    "if_else": (3, pc.if_else),
    "concat": (-1, lambda *args: pc.binary_join_element_wise(*args, "")),
    "cast": (2, lambda value, _type: value),  # handled in _call: the type is a name, not a value
}
_TYPE_ALIASES = {"double": "float64", "float": "float32", "boolean": "bool_", "bool": "bool_",
                 "str": "string", "utf8": "string", "text": "string", "date": "date32",
                 "bytes": "binary", "large_utf8": "large_string"}  # fmt: skip
_PARAM_TYPE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*[\[(]\s*(.*?)\s*[\])]\s*$")


class FilterSyntaxError(ValueError):
    """The filter or expression is not valid; the message says what is wrong."""


ExpressionSyntaxError = FilterSyntaxError
"""The same error under the name that fits value expressions."""


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


def _operand(node: ast.expr) -> _Column | pc.Expression | Any:
    """A column, a literal, or (arithmetic, a function call) a value expression."""
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return _Column(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "col":
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant):
            raise FilterSyntaxError("col() takes one string, the column name, like col('event time')")
        return _Column(str(node.args[0].value))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _operand(node.operand)
        if isinstance(inner, _Column | pc.Expression):
            return pc.negate_checked(_as_expression(inner))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise FilterSyntaxError(f"{node.func.id}() takes no keyword arguments")
        return _call(node.func.id, node.args)
    if isinstance(node, ast.BoolOp | ast.Compare) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        return _compile(node)
    return _literal(node)


def _as_expression(value: Any) -> pc.Expression:
    if isinstance(value, _Column):
        return ds.field(value.name)
    if isinstance(value, pc.Expression):
        return value
    return ds.scalar(value)


def _value(node: ast.expr) -> pc.Expression:
    return _as_expression(_operand(node))


def _call(name: str, args: list[ast.expr]) -> pc.Expression:
    arity, build = _FUNCTIONS[name]
    if (arity >= 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
        wanted = (
            f"{arity} argument{'s' if arity != 1 else ''}" if arity >= 0 else f"at least {-arity} arguments"
        )
        raise FilterSyntaxError(f"{name}() takes {wanted}, got {len(args)}")
    if name == "cast":
        target = args[1]
        if not isinstance(target, ast.Constant) or not isinstance(target.value, str):
            raise FilterSyntaxError("cast() takes a value and a type name, like cast(amount, 'int64')")
        return _as_expression(_operand(args[0])).cast(arrow_type(target.value))
    result: pc.Expression = build(*[_value(a) for a in args])
    return result


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type a name gives: ``int64``, ``float64``/``double``, ``string``, ``bool``,
    ``timestamp[ms]``, ``timestamp[us, tz=UTC]``, ``date32``, ``decimal128(10, 2)``, ... (pyarrow's
    own spelling, https://arrow.apache.org/docs/python/api/datatypes.html). Raises
    :class:`FilterSyntaxError` for a name it does not know."""
    text = name.strip()
    simple = _TYPE_ALIASES.get(text.lower(), text.lower())
    factory = getattr(pa, simple, None) if simple.isidentifier() else None
    if factory is not None and callable(factory):
        try:
            made = factory()
        except TypeError:
            made = None
        if isinstance(made, pa.DataType):
            return made
    match = _PARAM_TYPE.match(text)
    if match:
        kind, params = match.group(1).lower(), [p.strip() for p in match.group(2).split(",")]
        try:
            if kind == "timestamp":
                tz = next((p.split("=", 1)[1] for p in params[1:] if p.startswith("tz=")), None)
                return pa.timestamp(params[0], tz=tz)
            if kind in ("time32", "time64", "duration"):
                return getattr(pa, kind)(params[0])
            if kind in ("decimal128", "decimal256", "decimal"):
                factory = pa.decimal256 if kind == "decimal256" else pa.decimal128
                return factory(int(params[0]), int(params[1]) if len(params) > 1 else 0)
        except (ValueError, TypeError, IndexError, pa.ArrowException):
            pass
    raise FilterSyntaxError(
        f"unknown type {name!r} (expected an Arrow type name such as int64, float64, string, bool, "
        "date32, timestamp[ms], timestamp[us, tz=UTC], decimal128(10, 2))"
    )


def _compare(left: ast.expr, op: ast.cmpop, right: ast.expr) -> pc.Expression:
    a, b = _operand(left), _operand(right)
    if isinstance(op, ast.Is | ast.IsNot):
        if not isinstance(a, _Column | pc.Expression) or b is not None:
            raise FilterSyntaxError("'is' is only for 'column is None' / 'column is not None'")
        expr = _as_expression(a).is_null()
        return ~expr if isinstance(op, ast.IsNot) else expr
    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(a, _Column | pc.Expression) or not isinstance(b, list):
            raise FilterSyntaxError("'in' needs a column on the left and a list on the right: x in (1, 2)")
        expr = _as_expression(a).isin(b)
        return ~expr if isinstance(op, ast.NotIn) else expr
    if type(op) not in _COMPARE:
        raise FilterSyntaxError(f"unsupported operator {type(op).__name__}")
    if isinstance(a, _Column | pc.Expression) and isinstance(b, _Column | pc.Expression):
        return _COMPARE[type(op)](_as_expression(a), _as_expression(b))
    if isinstance(a, _Column | pc.Expression):
        return _COMPARE[type(op)](_as_expression(a), b)
    if isinstance(b, _Column | pc.Expression):
        return _COMPARE[_MIRROR[type(op)]](_as_expression(b), a)
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
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        return _value(node)  # e.g. is_null(x), if_else(...): the kernel's type decides
    raise FilterSyntaxError(f"unsupported expression {ast.unparse(node)!r}")


def _parse(text: str) -> ast.expr:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise FilterSyntaxError(f"cannot parse {text!r}: {exc.msg}") from None


def compile_value(text: str) -> pc.Expression:
    """Compile a value expression (``"amount * 100"``, ``"upper(country)"``) to a pyarrow expression.

    Raises :class:`FilterSyntaxError` with a message for the user.
    """
    if not isinstance(text, str):
        raise FilterSyntaxError(f"expected an expression string, got {text!r}")
    return _value(_parse(text))


def compile_filter(spec: str | list[Any] | None) -> pc.Expression | None:
    """Compile a filter (expression string or DNF list) to a pyarrow expression; None for no filter.

    Raises :class:`FilterSyntaxError` with a message for the user.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        return _compile(_parse(spec))
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
    """The column names a (valid) filter or value expression refers to, each once; ``[]`` for none."""
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
