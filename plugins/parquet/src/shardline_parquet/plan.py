"""The plan of a Parquet source: every file's footer, one schema for all of them, checked up front.

Before anything is sent (and in ``shardline validate``) the source reads the footer of every file
it will read (footers only: no data, bounded memory) and builds one schema:

- A column is the column of every file that has it. Files need not share a schema: a column
  missing from a file reads as null there, with the type the other files give it (the rule of
  pyarrow.dataset's unified schema). A column of ``null`` type (all nulls) takes the other files'
  type, and a dictionary column its value type.
- Two files that give one column different types are an error naming both files, the column and
  both types (cast the files, or read them as two sources).
- Partition columns (see :mod:`shardline_parquet.discovery`) come after the files' columns. Their
  type is ``int64`` when every value is an integer, ``string`` otherwise. A partition column that
  is also a column inside a file is an error.
- ``columns`` and the columns ``filter`` uses must be columns of that schema, and the filter's
  comparisons must fit the columns' types; otherwise a :class:`~shardline.SchemaError` says which.

A file that cannot be read (not Parquet, truncated, permission denied, vanished) raises
:class:`ParquetFileError` naming it and what to do; no pyarrow exception reaches the user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from shardline import SchemaError, ShardlineError

from shardline_parquet.discovery import DataFile

_INT = re.compile(r"^[+-]?\d{1,18}$")


class ParquetFileError(ShardlineError):
    """A file of the source cannot be read; the message names it and says what to do."""


def arrow_message(exc: BaseException) -> str:
    """The first line of a pyarrow/OS error, for a one-line message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def file_error(path: str, exc: BaseException, doing: str = "read") -> ParquetFileError:
    """A :class:`ParquetFileError` for ``exc`` raised while doing ``doing`` on ``path``."""
    if isinstance(exc, FileNotFoundError):
        return ParquetFileError(
            f"source.path: {path} was removed during the run (cannot {doing} it); "
            "run again to list the files anew"
        )
    if isinstance(exc, PermissionError):
        return ParquetFileError(
            f"source.path: cannot read {path}: permission denied; "
            "grant read access or leave it out of source.path"
        )
    message = arrow_message(exc)
    lowered = message.lower()
    if "magic bytes" in lowered or "file size is 0" in lowered or "minimum file footer" in lowered:
        return ParquetFileError(
            f"source.path: {path} is not a Parquet file (or is truncated): {message}; remove it or narrow "
            "source.path to the Parquet files (e.g. 'dir/**/*.parquet')"
        )
    return ParquetFileError(
        f"source.path: cannot {doing} {path}: {message}; the file may be corrupt (rewrite it or leave it out)"
    )


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of the plan: where it is, its partition values (typed) and what its footer says."""

    path: str
    relative: str
    partition: dict[str, Any]
    schema: pa.Schema
    row_group_rows: tuple[int, ...]

    @property
    def num_rows(self) -> int:
        """Rows in the file (from its footer)."""
        return sum(self.row_group_rows)

    def first_row(self, row_group: int) -> int:
        """Row of the file where ``row_group`` starts."""
        return sum(self.row_group_rows[:row_group])


@dataclass(frozen=True)
class Plan:
    """The files, the unified ``schema``, the output ``columns`` and the compiled filter."""

    files: list[PlannedFile]
    schema: pa.Schema
    partition_columns: list[str]
    columns: list[str]
    filter: pc.Expression | None = None
    filter_columns: list[str] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        """Rows of every file (before the filter)."""
        return sum(f.num_rows for f in self.files)

    def needed(self) -> list[str]:
        """The columns a read must produce: the output columns, then those only the filter uses."""
        return list(dict.fromkeys([*self.columns, *self.filter_columns]))

    def guarantee(self, planned: PlannedFile) -> pc.Expression:
        """What holds for every row of ``planned``: its partition values (for pruning)."""
        expr: pc.Expression = ds.scalar(True)
        for name in self.partition_columns:
            value = planned.partition.get(name)
            term = (
                ds.field(name).is_null()
                if value is None
                else ds.field(name) == pa.scalar(value, self.schema.field(name).type)
            )
            expr = expr & term
        return expr

    def kept_files(self) -> set[str]:
        """Paths of the files the filter may keep rows of, judged by partition values alone."""
        paths = {f.path for f in self.files}
        if self.filter is None or not set(self.filter_columns) & set(self.partition_columns):
            return paths
        dataset = ds.FileSystemDataset.from_paths(
            [f.path for f in self.files],
            schema=self.schema,
            format=ds.ParquetFileFormat(),
            filesystem=pafs.LocalFileSystem(),
            partitions=[self.guarantee(f) for f in self.files],
        )
        try:
            return {fragment.path for fragment in dataset.get_fragments(filter=self.filter)}
        except (pa.ArrowException, ValueError, TypeError):
            return paths  # pruning is an optimisation; reading applies the filter anyway

    def spread(self, parts: int) -> list[Plan]:
        """This plan cut into ``parts`` plans of whole files, balanced by rows (largest first onto
        the lightest part), each keeping the files' sorted order; some may be empty."""
        loads = [0] * parts
        owner: dict[int, int] = {}
        for index in sorted(range(len(self.files)), key=lambda i: -self.files[i].num_rows):
            part = loads.index(min(loads))
            owner[index] = part
            loads[part] += self.files[index].num_rows
        return [
            replace(self, files=[f for i, f in enumerate(self.files) if owner[i] == part])
            for part in range(parts)
        ]

    def summary(self) -> str:
        """One line for ``shardline validate``: files, rows, columns, partition columns."""
        parts = [
            f"{len(self.files):,} files",
            f"{self.num_rows:,} rows",
            f"columns {', '.join(self.columns)}",
        ]
        if self.partition_columns:
            parts.append(f"partition columns {', '.join(self.partition_columns)}")
        return "; ".join(parts)


def read_footer(data_file: DataFile) -> tuple[pa.Schema, tuple[int, ...]]:
    """The Arrow schema and the row counts of the row groups of one file, from its footer."""
    try:
        metadata = pq.read_metadata(data_file.path)
        schema = metadata.schema.to_arrow_schema()
        rows = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    except (OSError, pa.ArrowException) as exc:
        raise file_error(data_file.path, exc, "read the footer of") from None
    return schema, rows


def make_plan(
    data_files: Sequence[DataFile],
    columns: Sequence[str] | None,
    filter_expr: pc.Expression | None,
    filter_columns: Sequence[str],
    filter_text: Any = None,
) -> Plan:
    """Read every footer, unify the schemas, type the partitions and check columns and filter."""
    types: dict[str, tuple[pa.DataType, str]] = {}
    planned_schemas: list[tuple[pa.Schema, tuple[int, ...]]] = []
    previous: pa.Schema | None = None
    for data_file in data_files:
        schema, rows = read_footer(data_file)
        if previous is not None and schema.equals(previous):
            schema = previous  # one object for the files that share a schema
        previous = schema
        planned_schemas.append((schema, rows))
        for column in schema:
            _merge(types, column.name, column.type, data_file.path)
    partition_types = _partition_types(data_files)
    for name in partition_types:
        if name in types:
            inside = next(
                f.path for f, (s, _) in zip(data_files, planned_schemas, strict=True) if name in s.names
            )
            raise SchemaError(
                f"source.partitioning: {name!r} is both a partition directory ({name}=...) and a column "
                f'inside {inside}; set partitioning = "none" to use the file\'s column'
            )
    fields = [pa.field(name, _final(t)) for name, (t, _) in types.items()]
    fields += [pa.field(name, t) for name, t in partition_types.items()]
    unified = pa.schema(fields)
    planned = [
        PlannedFile(
            f.path,
            f.relative,
            {k: _typed(v, partition_types[k]) for k, v in f.partition.items()},
            schema,
            rows,
        )
        for f, (schema, rows) in zip(data_files, planned_schemas, strict=True)
    ]
    output = list(columns) if columns else list(unified.names)
    _check_names("source.columns", output, unified, len(planned))
    _check_names("source.filter", list(filter_columns), unified, len(planned), filter_text)
    if filter_expr is not None:
        _check_filter(filter_expr, unified, filter_text)
    return Plan(planned, unified, list(partition_types), output, filter_expr, list(filter_columns))


def _merge(types: dict[str, tuple[pa.DataType, str]], name: str, new: pa.DataType, path: str) -> None:
    known = types.get(name)
    if known is None:
        types[name] = (new, path)
        return
    old, old_path = known
    if pa.types.is_null(new) or old == new:
        return
    if pa.types.is_null(old):
        types[name] = (new, path)
        return
    if _final(old) == _final(new):
        types[name] = (_final(new), old_path)  # dictionary and plain values: the plain type
        return
    raise SchemaError(
        f"source.path: column {name!r} is {old} in {old_path} but {new} in {path}; the files of one "
        "source must agree on a column's type (rewrite one of them, or read them as separate sources)"
    )


def _final(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _partition_types(data_files: Sequence[DataFile]) -> dict[str, pa.DataType]:
    values: dict[str, list[str]] = {}
    for data_file in data_files:
        for key, value in data_file.partition.items():
            seen = values.setdefault(key, [])
            if value is not None:
                seen.append(value)
    return {
        key: pa.int64() if seen and all(_INT.match(v) for v in seen) else pa.string()
        for key, seen in values.items()
    }


def _typed(value: str | None, t: pa.DataType) -> Any:
    if value is None:
        return None
    return int(value) if pa.types.is_integer(t) else value


def _check_names(
    what: str, names: Sequence[str], schema: pa.Schema, files: int, filter_text: Any = None
) -> None:
    missing = [n for n in names if n not in schema.names]
    if not missing:
        return
    subject = f"{what} = {filter_text!r}" if filter_text is not None else what
    verb = "are" if len(missing) > 1 else "is"
    known = ", ".join(schema.names) or "none"
    raise SchemaError(
        f"{subject}: {', '.join(map(repr, missing))} {verb} in none of the {files:,} files of source.path "
        f"(their columns: {known})"
    )


def _check_filter(expr: pc.Expression, schema: pa.Schema, filter_text: Any) -> None:
    try:
        schema.empty_table().filter(expr)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        types = ", ".join(f"{f.name}: {f.type}" for f in schema)
        raise SchemaError(
            f"source.filter = {filter_text!r} does not fit the columns' types: {arrow_message(exc)} "
            f"(columns: {types})"
        ) from None
