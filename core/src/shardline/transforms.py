"""Transforms between source and sink: the ``[[transform]]`` steps of a pipeline.

Each step is one table with one key naming its kind; steps run in file order on every batch the
source yields, before the sink maps rows to records::

    [[transform]]
    sql = "SELECT user_id, amount * 100 AS cents FROM batch WHERE kind = 'purchase'"
    [[transform]]
    filter = "cents >= 500"                    # the expression language of shardline.expressions
    [[transform]]
    rename = { user_id = "user" }
    [[transform]]
    cast = { cents = "int32" }
    [[transform]]
    set = { euros = "cents / 100", tag = "upper(user)" }
    [[transform]]
    select = ["user", "cents", "euros", "tag"]

Built-in kinds: ``sql`` (DuckDB over the Arrow batch as table ``batch``, without copying it; the
``shardline[sql]`` extra; :mod:`shardline.sql_transform`), ``filter``, ``select``, ``rename``,
``cast`` and ``set`` (:mod:`shardline.transform_steps`). A plugin adds
kinds through ``shardline_register_transforms`` with a :class:`Transform` subclass.

What a step may do, and what the runner guarantees:

- drop, add, rename, retype and reorder *columns*, and drop *rows*; never reorder rows (a key's
  records must reach the stream in source order). Built-ins keep row order by construction: the
  Arrow kernels they use are order-preserving and run single-threaded; an ``sql`` query is refused
  when it folds or reorders rows (``GROUP BY``, aggregates, ``DISTINCT``, ``ORDER BY``, ``LIMIT``,
  joins, set operations, sub-queries in ``FROM``), and the rows of any other query (a window
  function may hand them back in another order) are put back in source order by a row-number
  column the runner adds (``__shardline_row``) and takes away again.
- Rows a step drops count as filtered (:attr:`shardline.RunSummary.filtered`); the batch's source
  positions are acknowledged all the same, so the checkpoint moves past them (a batch with no row
  left is acknowledged as an empty write, in order).
- A step that raises on a batch dead-letters every row of that batch, with the step, the error and
  each row's source position; the run goes on with the next batch.
- ``shardline validate`` (and ``run``, before anything is sent) checks every step against the
  schema the source declares (:meth:`shardline.Source.schema`), binding SQL against an empty table
  of it, and names the step and the column that does not fit.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from shardline.errors import ShardlineError

ROW_COLUMN = "__shardline_row"
"""The row-number column the ``sql`` step adds to the batch it queries (and removes again)."""

Rows = npt.NDArray[np.int64]
"""For each output row, the row of the step's input batch it came from (non-decreasing)."""


class TransformError(ShardlineError):
    """A ``[[transform]]`` step is invalid, does not fit the source's schema, or failed on a batch.

    ``step`` is the step's number (from 1, in file order), ``kind`` its kind (``sql``, ...),
    ``column`` the column at fault when known.
    """

    def __init__(
        self, message: str, *, step: int | None = None, kind: str | None = None, column: str | None = None
    ) -> None:
        super().__init__(message)
        self.step, self.kind, self.column = step, kind, column


class Transform(abc.ABC):
    """One kind of ``[[transform]]`` step; a plugin subclasses it and registers it by name.

    ``Options`` is the type of the step's value (what follows ``<kind> =`` in the file): a plain
    type such as ``str`` or ``dict[str, str]``, or a :class:`shardline.SourceOptions`-like pydantic
    model for a table of options; the config validates the value against it (unknown keys of a model
    are errors). ``expects`` says the same in words for error messages.

    The runner makes one instance per step and run (``cls(options)``; raise :class:`TransformError`
    for options that cannot work), calls :meth:`output_schema` once with the schema of the batches
    the step will get when it is known, then :meth:`apply_rows` (by default :meth:`apply`) on every
    batch from one thread, and :meth:`close` at the end.
    """

    Options: ClassVar[Any] = Any
    expects: ClassVar[str] = "a value"

    def __init__(self, options: Any) -> None:
        self.options = options

    @abc.abstractmethod
    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch | pa.Table:
        """The transformed batch: any columns, rows in the order they came (some may be dropped).

        A result with as many rows as ``batch`` must hold the same rows; one with fewer rows should
        come from :meth:`apply_rows` instead, so dead letters of later rows keep their source
        positions. Raise on a batch that cannot be transformed: its rows are dead-lettered.
        """

    def apply_rows(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rows | None]:
        """:meth:`apply`, with the input row of each output row (None: the same rows, in order).

        Override this in a step that drops rows and knows which (a filter's mask); the default
        returns None when the row count is unchanged, else an empty array meaning "not known".
        """
        out = one_batch(self.apply(batch))
        return out, None if out.num_rows == batch.num_rows else _UNKNOWN

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """The schema of this step's output for input ``schema``; raise :class:`TransformError`
        naming the ``column`` that does not fit. Default: :meth:`apply` on an empty batch of it."""
        return one_batch(self.apply(empty_batch(schema))).schema

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the step holds (a DuckDB connection)."""


_UNKNOWN: Rows = np.zeros(0, np.int64)  # "rows dropped, which ones not known": identity is None


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A batch of ``schema`` with no row."""
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def one_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """A Table (or batch) as one RecordBatch (chunks combined)."""
    if isinstance(data, pa.RecordBatch):
        return data
    if not isinstance(data, pa.Table):
        raise TypeError(
            f"a transform returned {type(data).__name__}, expected a pyarrow RecordBatch or Table"
        )
    batches = data.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_arrays(
        [data.column(i).combine_chunks() for i in range(data.num_columns)], schema=data.schema
    )


# --------------------------------------------------------------------------- steps of a pipeline


@dataclass(frozen=True)
class TransformStep:
    """One validated ``[[transform]]`` table: its number (from 1), kind, class and options."""

    number: int
    kind: str
    cls: type[Transform]
    options: Any

    def describe(self) -> str:
        """``step 2 (sql)``."""
        return f"step {self.number} ({self.kind})"


def check_registration(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be registered as transform ``name`` (None when it can)."""
    if not (isinstance(value, type) and issubclass(value, Transform)):
        return f"registered transform {name!r} as {value!r}: expected a subclass of shardline.Transform"
    missing = sorted(getattr(value, "__abstractmethods__", ()))
    if missing:
        return f"registered transform {name!r}, which does not implement {', '.join(missing)}"
    return None


def parse_steps(doc: Any, origin: str) -> tuple[tuple[TransformStep, ...], list[str]]:
    """Validate the ``transform`` list of a pipeline document; return the steps and error lines.

    Each step is a table with exactly one key, a registered transform kind; its value is checked
    against the kind's ``Options`` and the class is built once (then closed) so that options that
    cannot work (an SQL query that reorders rows, an unknown type name) are refused here.
    """
    from shardline.plugins import lookup, registered

    if doc is None:
        return (), []
    if not isinstance(doc, list):
        return (), [
            f"{origin}: transform: expected a list of steps ([[transform]] tables), got a single table"
        ]
    kinds = sorted(registered("transforms"))
    steps: list[TransformStep] = []
    errors: list[str] = []
    for index, table in enumerate(doc):
        where = f"{origin}: transform step {index + 1}"
        if not isinstance(table, dict):
            got = json.dumps(table, default=str)
            errors.append(f'{where}: expected a table like {{ sql = "SELECT ..." }}, got {got}')
            continue
        known = [k for k in table if k in kinds]
        unknown = [k for k in table if k not in kinds]
        choices = ", ".join(kinds)
        if unknown:
            errors.extend(f"{where}: {k}: unknown key (expected one step kind: {choices})" for k in unknown)
            continue
        if len(known) != 1:
            got = " and ".join(known) if known else "none"
            errors.append(
                f"{where}: expected exactly one step kind ({choices}) per [[transform]] table, got {got}"
            )
            continue
        kind = known[0]
        cls: type[Transform] = lookup("transforms", kind)
        try:
            options = TypeAdapter(cls.Options).validate_python(table[kind])
        except ValidationError as exc:
            errors.append(f"{where} ({kind}): expected {cls.expects}{_pydantic_detail(exc)}")
            continue
        try:
            cls(options).close()
        except TransformError as exc:
            errors.append(f"{where} ({kind}): {exc}")
            continue
        steps.append(TransformStep(index + 1, kind, cls, options))
    return tuple(steps), errors


def _pydantic_detail(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and p[:1].isupper()))
    if first["type"] == "extra_forbidden":
        return f" ({loc}: unknown key)"
    return f" ({loc + ': ' if loc else ''}{first['msg'].lower()})"


class StepFailed(Exception):
    """A step raised on a batch: ``step`` says which, ``__cause__`` what it raised."""

    def __init__(self, step: TransformStep, error: BaseException) -> None:
        super().__init__(f"transform {step.describe()} failed: {type(error).__name__}: {error}")
        self.step = step


class TransformChain:
    """The steps of one run, built once: ``check`` against a schema, ``apply`` to every batch."""

    def __init__(self, steps: Sequence[TransformStep]) -> None:
        self.steps = tuple(steps)
        self._transforms: list[Transform] = []
        try:
            for step in self.steps:
                self._transforms.append(step.cls(step.options))
        except BaseException:
            self.close()
            raise

    def __bool__(self) -> bool:
        return bool(self.steps)

    def check(self, schema: pa.Schema) -> pa.Schema:
        """The output schema for batches of ``schema``; raise :class:`TransformError` naming the step
        and the column (``transform step 2 (sql): column "amout" not found ...``)."""
        for step, transform in zip(self.steps, self._transforms, strict=True):
            try:
                schema = transform.output_schema(schema)
            except TransformError as exc:
                raise TransformError(
                    f"transform {step.describe()}: {exc}", step=step.number, kind=step.kind, column=exc.column
                ) from None
            except Exception as exc:
                raise TransformError(
                    f"transform {step.describe()}: {type(exc).__name__}: {exc}",
                    step=step.number,
                    kind=step.kind,
                ) from None
        return schema

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rows | None]:
        """Run every step; return the batch and the input row of each output row (None: all rows,
        in order; an empty array with output rows: not known). Raises :class:`StepFailed`."""
        rows: Rows | None = None
        for step, transform in zip(self.steps, self._transforms, strict=True):
            before = batch.num_rows
            try:
                batch, kept = transform.apply_rows(batch)
                batch = one_batch(batch)
            except Exception as exc:
                raise StepFailed(step, exc) from exc
            if kept is None:
                if batch.num_rows != before:
                    kept = _UNKNOWN
                else:
                    continue
            if len(kept) and bool((np.diff(kept) < 0).any()):
                raise StepFailed(
                    step, TransformError("the step reordered rows (a transform must keep source order)")
                )
            if rows is _UNKNOWN or (len(kept) == 0 and batch.num_rows):
                rows = _UNKNOWN
            else:
                rows = kept if rows is None else rows[kept]
        return batch, rows

    def close(self) -> None:
        """Close every step (their DuckDB connections)."""
        for transform in self._transforms:
            with contextlib.suppress(Exception):  # closing is best effort
                transform.close()


def mapped_origin(
    rows: Rows | None,
    batch: pa.RecordBatch,
    columns: Sequence[str],
    origin: Callable[[int], dict[str, Any]] | None,
) -> Callable[[int], dict[str, Any]] | None:
    """The ``origin(row)`` of a transformed batch: the source's origin columns of the input batch
    and the source's ``origin`` at the input row each output row came from (None when not known)."""
    present = [c for c in columns if c in batch.schema.names]
    if (rows is None and not present) or (rows is not None and len(rows) == 0):
        return origin if rows is None else None
    arrays = {c: batch.column(c) for c in present}

    def where(row: int) -> dict[str, Any]:
        source_row = row if rows is None else int(rows[row])
        out = {name: _plain(array[source_row].as_py()) for name, array in arrays.items()}
        if origin is not None:
            out.update(origin(source_row))
        return out

    return where


def failed_rows(
    batch: pa.RecordBatch,
    failure: StepFailed,
    columns: Sequence[str],
    origin: Callable[[int], dict[str, Any]] | None,
    key_column: str | None,
) -> list[dict[str, Any]]:
    """Dead-letter records for every row of a batch a step failed on: the row as JSON, its key, its
    row number, the error, and where the source read it."""
    where = mapped_origin(None, batch, columns, origin)
    rows = batch.to_pylist()
    keys = batch.column(key_column).to_pylist() if key_column and key_column in batch.schema.names else None
    out = []
    for i, row in enumerate(rows):
        try:
            place = where(i) if where is not None else None
        except Exception as exc:  # a source bug must not lose the dead letter
            place = {"error": f"origin unknown: {exc}"}
        out.append(
            {
                "data": json.dumps(row, default=_json_default, ensure_ascii=False).encode(),
                "partition_key": None if keys is None or keys[i] is None else str(_plain(keys[i])),
                "row": i,
                "error": str(failure),
                "origin": place,
            }
        )
    return out


def _json_default(value: Any) -> Any:
    return _plain(value) if isinstance(value, bytes) else str(value)


def check_pipeline(config: Any) -> pa.Schema | None:
    """Build and check a pipeline's steps against its source's schema; return the output schema
    (None when the source declares none). Also refuses an output without the ``[mapping]`` columns.
    Raises :class:`TransformError`: ``transform step 2 (sql): column "amout" not found ...``."""
    chain = TransformChain(config.transforms)
    try:
        schema = config.source_cls.schema(config.source_options)
        if schema is None:
            return None
        out = chain.check(schema)
    finally:
        chain.close()
    mapping = config.mapping
    for key in ("partition_key", "data_column", "client_info", "shard_id"):
        name = getattr(mapping, key, None)
        if name is not None and name not in out.names:
            raise TransformError(
                f'the [[transform]] steps give no column "{name}" for [mapping] {key} '
                f"(they give: {', '.join(out.names) or 'none'})",
                column=name,
            )
    return out


def _plain(value: Any) -> Any:
    return value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else value
