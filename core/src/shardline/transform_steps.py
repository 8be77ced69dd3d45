"""The built-in ``[[transform]]`` steps over Arrow: ``filter``, ``select``, ``rename``, ``cast``, ``set``.

Each is column-at-a-time (pyarrow compute kernels; expressions from :mod:`shardline.expressions`,
evaluated by Acero single-threaded, whose serial execution keeps row order). The ``sql`` step is in
:mod:`shardline.sql_transform`. See :mod:`shardline.transforms` for the contract.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardline.expressions import FilterSyntaxError, arrow_type, compile_filter, compile_value, filter_columns
from shardline.transforms import ROW_COLUMN, Rows, Transform, TransformError, empty_batch


def _missing(names: Sequence[str], schema: pa.Schema) -> str | None:
    return next((n for n in names if n not in schema.names), None)


def _no_column(name: str, schema: pa.Schema) -> TransformError:
    known = ", ".join(n for n in schema.names if n != ROW_COLUMN) or "none"
    return TransformError(f'column "{name}" not found (the batch has: {known})', column=name)


def _evaluate(batch: pa.RecordBatch, expressions: dict[str, pc.Expression]) -> dict[str, pa.Array]:
    """Evaluate expressions over a batch with Acero, single-threaded: serial execution keeps row order."""
    from pyarrow import acero

    table = pa.Table.from_batches([batch])
    plan = acero.Declaration.from_sequence(
        [
            acero.Declaration("table_source", acero.TableSourceNodeOptions(table)),
            acero.Declaration(
                "project", acero.ProjectNodeOptions(list(expressions.values()), list(expressions))
            ),
        ]
    )
    result = plan.to_table(use_threads=False)
    return {name: result.column(name).combine_chunks() for name in expressions}


def _expression_error(exc: Exception, names: Sequence[str]) -> TransformError:
    """A pyarrow error while binding or evaluating an expression, naming its column when it can."""
    text = " ".join(str(exc).split())
    column = next((n for n in names if re.search(rf"\b{re.escape(n)}\b", text)), None)
    return TransformError(text, column=column)


class FilterTransform(Transform):
    """``filter = "amount >= 10 and kind == 'purchase'"``: keep the rows the condition is true for
    (false and null drop the row). The language of :mod:`shardline.expressions`, or a DNF list."""

    Options = str | list[Any]
    expects = 'a condition string like "amount >= 10" (or a list of [column, op, value] terms)'

    def __init__(self, options: str | list[Any]) -> None:
        super().__init__(options)
        try:
            self.expression = compile_filter(options)
        except FilterSyntaxError as exc:
            raise TransformError(f"invalid filter: {exc}") from None
        self.columns = filter_columns(options)

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        missing = _missing(self.columns, schema)
        if missing is not None:
            raise _no_column(missing, schema)
        try:
            mask = _evaluate(empty_batch(schema), {"keep": self.expression})["keep"]
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise _expression_error(exc, self.columns) from None
        if not pa.types.is_boolean(mask.type) and not pa.types.is_null(mask.type):
            raise TransformError(f"the filter gives {mask.type} values, not true/false")
        return schema

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return self.apply_rows(batch)[0]

    def apply_rows(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rows | None]:
        mask = _evaluate(batch, {"keep": self.expression})["keep"]
        keep = (
            mask.fill_null(False).to_numpy(zero_copy_only=False)
            if mask.null_count
            else mask.to_numpy(zero_copy_only=False)
        )
        if keep.all():
            return batch, None
        rows = np.flatnonzero(keep).astype(np.int64)
        return batch.take(pa.array(rows)), rows


class SelectTransform(Transform):
    """``select = ["user_id", "amount"]``: keep these columns, in this order."""

    Options = list[str]
    expects = 'a list of column names like ["user_id", "amount"]'

    def __init__(self, options: list[str]) -> None:
        super().__init__(options)
        if not options or len(set(options)) != len(options) or not all(options):
            raise TransformError("expected a non-empty list of distinct column names")

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        missing = _missing(self.options, schema)
        if missing is not None:
            raise _no_column(missing, schema)
        return pa.schema([schema.field(n) for n in self.options])

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.select(self.options)


class RenameTransform(Transform):
    """``rename = { user_id = "user", ts = "time" }``: new names for columns (the others keep theirs)."""

    Options = dict[str, str]
    expects = 'a table of old = "new" column names'

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        if not options or not all(options.values()):
            raise TransformError('expected a non-empty table of old = "new" names')

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        missing = _missing(list(self.options), schema)
        if missing is not None:
            raise _no_column(missing, schema)
        names = self._names(schema.names)
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise TransformError(f'two columns would be called "{twice}"', column=twice)
        return pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)])

    def _names(self, names: list[str]) -> list[str]:
        return [self.options.get(n, n) for n in names]

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.rename_columns(self._names(batch.schema.names))


class CastTransform(Transform):
    """``cast = { amount = "int64", ts = "timestamp[ms]" }``: convert columns to Arrow types.

    A safe cast: a value that does not fit (overflow, a truncated fraction, text that is no number)
    fails the batch, whose rows are dead-lettered.
    """

    Options = dict[str, str]
    expects = 'a table of column = "arrow type" (int64, float64, string, timestamp[ms], ...)'

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        if not options:
            raise TransformError('expected a non-empty table of column = "type"')
        self.types: dict[str, pa.DataType] = {}
        for name, type_name in options.items():
            try:
                self.types[name] = arrow_type(type_name)
            except FilterSyntaxError as exc:
                raise TransformError(f"{name}: {exc}", column=name) from None

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        missing = _missing(list(self.types), schema)
        if missing is not None:
            raise _no_column(missing, schema)
        for name, to in self.types.items():
            source = schema.field(name).type
            try:
                pa.array([], source).cast(to)
            except (pa.ArrowException, ValueError, TypeError):
                raise TransformError(
                    f'column "{name}" ({source}) cannot be cast to {to}', column=name
                ) from None
        return pa.schema([f.with_type(self.types[f.name]) if f.name in self.types else f for f in schema])

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [
            column.cast(self.types[name]) if name in self.types else column
            for name, column in zip(batch.schema.names, batch.columns, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class SetTransform(Transform):
    """``set = { cents = "amount * 100", country = "upper(country)" }``: derived columns.

    Each value is an expression of :mod:`shardline.expressions` over the batch's columns (all
    evaluated on the input batch); an existing column is replaced in place, a new one is added at
    the end.
    """

    Options = dict[str, str]
    expects = 'a table of column = "expression"'

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        if not options:
            raise TransformError('expected a non-empty table of column = "expression"')
        self.expressions: dict[str, pc.Expression] = {}
        self.columns: list[str] = []
        for name, text in options.items():
            try:
                self.expressions[name] = compile_value(text)
                self.columns.extend(filter_columns(text))
            except FilterSyntaxError as exc:
                raise TransformError(f"{name}: {exc}", column=name) from None

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        missing = _missing(self.columns, schema)
        if missing is not None:
            raise _no_column(missing, schema)
        try:
            return self.apply(empty_batch(schema)).schema
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise _expression_error(exc, [*self.columns, *self.expressions]) from None

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        values = _evaluate(batch, self.expressions)
        names = list(batch.schema.names)
        arrays = list(batch.columns)
        for name, array in values.items():
            if name in names:
                arrays[names.index(name)] = array
            else:
                names.append(name)
                arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, names=names)


def builtin_transforms() -> dict[str, type[Transform]]:
    """The built-in step kinds by name (``sql`` first), as ``shardline.builtins`` registers them."""
    from shardline.sql_transform import SqlTransform

    return {
        "sql": SqlTransform,
        "filter": FilterTransform,
        "select": SelectTransform,
        "rename": RenameTransform,
        "cast": CastTransform,
        "set": SetTransform,
    }
