"""The ``sql`` step of ``[[transform]]``: a DuckDB query over each Arrow batch (``shardline[sql]``).

Why row order holds: the query's shape is checked when the config is read (one SELECT over
``batch`` alone; no GROUP BY, DISTINCT, ORDER BY, LIMIT, join, set operation or WITH), a row-number
column is added to the batch and to the select list (so an aggregate fails to bind: each output row
must come from one input row), and the result is put back in row-number order when DuckDB returns
it otherwise (a window function's partitions). See :mod:`shardline.transforms`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pyarrow as pa

from shardline.transforms import ROW_COLUMN, Rows, Transform, TransformError, empty_batch, one_batch

_POSITION = "__shardline_position"


class SqlTransform(Transform):
    """``sql = "SELECT ... FROM batch WHERE ..."``: a DuckDB query over the batch as table ``batch``.

    DuckDB scans the Arrow batch in place (``register`` of the batch: no copy) and hands the result
    back as Arrow. One connection per step, reused for every batch. Each output row must come from
    one input row: see the module docstring for what is refused, and why row order still holds.
    Needs ``pip install "shardline[sql]"``.
    """

    Options = str
    expects = "a SELECT query over the table batch"

    def __init__(self, options: str) -> None:
        super().__init__(options)
        try:
            import duckdb
        except ImportError:
            raise TransformError('the sql step needs DuckDB: pip install "shardline[sql]"') from None
        self._duckdb = duckdb
        self._con = duckdb.connect(":memory:")
        # one thread: a batch of 10,000 rows runs as fast (3.5 ms vs 3.9 ms with 2) and the sink's
        # thread keeps the other core
        self._con.execute("SET threads = 1")
        self.query = self._rewrite(options)
        self._current = _CurrentBatch()
        self._reuse = int(duckdb.__version__.split(".")[0]) >= 2  # 1.x cannot re-scan _CurrentBatch
        self._relation: Any = None
        self._schema: pa.Schema | None = None

    def _rewrite(self, text: str) -> str:
        """Check the query's shape; return it with the row number added to its select list."""
        try:
            tree = json.loads(
                self._con.execute("SELECT json_serialize_sql(CAST(? AS VARCHAR))", [text]).fetchall()[0][0]
            )
        except self._duckdb.Error as exc:
            raise TransformError(_duck_message(exc)) from None
        if tree.get("error"):
            raise TransformError(f"invalid SQL: {tree.get('error_message', 'cannot parse')}")
        statements = tree.get("statements") or []
        if len(statements) != 1:
            raise TransformError(f"expected one SELECT statement, got {len(statements)}")
        node = statements[0]["node"]
        if node.get("type") != "SELECT_NODE":
            raise TransformError(
                "expected one SELECT over batch (UNION, INTERSECT and EXCEPT mix batches' rows)"
            )
        source = node.get("from_table") or {}
        if source.get("type") != "BASE_TABLE" or str(source.get("table_name", "")).lower() != "batch":
            raise TransformError(
                "the query must read FROM batch alone (no join, no sub-query in FROM): "
                "each output row comes from one row of the batch"
            )
        refused = []
        if node.get("group_expressions") or node.get("having") is not None:
            refused.append("GROUP BY/HAVING fold rows together")
        for modifier in node.get("modifiers") or []:
            kind = modifier.get("type")
            if kind == "DISTINCT_MODIFIER":
                refused.append("DISTINCT folds rows together")
            elif kind == "ORDER_MODIFIER":
                refused.append("ORDER BY would reorder rows (a transform keeps source order)")
            elif kind == "LIMIT_MODIFIER" or kind == "LIMIT_PERCENT_MODIFIER":
                refused.append("LIMIT/OFFSET would apply to each batch, not to the data")
        if (node.get("cte_map") or {}).get("map"):
            refused.append("WITH (common table expressions) is not supported")
        if refused:
            raise TransformError("; ".join(refused))
        node["select_list"].append(
            {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": _POSITION, "column_names": [ROW_COLUMN]}
        )
        rewritten: str = self._con.execute(
            "SELECT json_deserialize_sql(CAST(? AS JSON))", [json.dumps(tree)]
        ).fetchall()[0][0]
        return rewritten

    def _run(self, batch: pa.RecordBatch) -> pa.Table:
        if ROW_COLUMN in batch.schema.names:
            raise TransformError(f"the batch already has a column named {ROW_COLUMN}", column=ROW_COLUMN)
        numbered = batch.append_column(ROW_COLUMN, pa.array(np.arange(batch.num_rows, dtype=np.int64)))
        if not self._reuse:
            return self._run_registered(numbered)
        self._current.batch = numbered
        try:
            if self._relation is None or numbered.schema != self._schema:
                # parsed and bound once per schema: re-running the bound query over the next batch
                # takes 3.1 ms for 10,000 rows, registering the batch and binding anew 10 ms
                if self._relation is None:
                    self._con.register("batch", self._current)
                self._relation, self._schema = self._con.sql(self.query), numbered.schema
            table: pa.Table = self._relation.to_arrow_table()
        finally:
            self._current.batch = None  # do not keep the batch alive between runs
        return table

    def _run_registered(self, numbered: pa.RecordBatch) -> pa.Table:
        """DuckDB 1.x: a registered stream is scanned once, so register and bind for every batch."""
        self._con.register("batch", numbered)
        try:
            relation = self._con.sql(self.query)
            fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
            table: pa.Table = fetch()
        finally:
            self._con.unregister("batch")
        return table

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        try:
            table = self._run(empty_batch(schema))
        except self._duckdb.Error as exc:
            message = _duck_message(exc)
            if ROW_COLUMN in message and "GROUP BY" in message:
                message = (
                    "aggregates (count, sum, ...) fold rows together: each output row must come from one row"
                )
                raise TransformError(message) from None
            column = re.search(r'column "([^"]+)"', message) or re.search(r'"([^"]+)" not found', message)
            raise TransformError(message, column=column.group(1) if column else None) from None
        return _strip(table).schema

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return self.apply_rows(batch)[0]

    def apply_rows(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rows | None]:
        table = self._run(batch)
        rows = table.column(_POSITION).to_numpy().astype(np.int64, copy=False)
        if len(rows) > 1 and bool((np.diff(rows) < 0).any()):  # e.g. a window function's partitions
            order = np.argsort(rows, kind="stable")
            table, rows = table.take(pa.array(order)), rows[order]
        out = one_batch(_strip(table))
        if len(rows) == batch.num_rows and bool((rows == np.arange(len(rows))).all()):
            return out, None
        return out, rows

    def close(self) -> None:
        self._con.close()


class _CurrentBatch:
    """What DuckDB scans as ``batch``: the batch being transformed, through the Arrow PyCapsule
    stream interface, so that a query bound once scans each new batch in place (no copy)."""

    batch: pa.RecordBatch | None = None

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        assert self.batch is not None, "scanned outside a transform"
        return pa.Table.from_batches([self.batch]).__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> Any:
        assert self.batch is not None, "scanned outside a transform"
        return self.batch.schema.__arrow_c_schema__()


def _strip(table: pa.Table) -> pa.Table:
    return table.drop_columns([n for n in (_POSITION, ROW_COLUMN) if n in table.schema.names])


def _duck_message(exc: Exception) -> str:
    text = str(exc).split("\n\nLINE")[0]
    return " ".join(text.replace(f", {_POSITION}", "").split())
