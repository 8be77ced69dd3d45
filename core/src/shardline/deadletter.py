"""Dead-letter targets: where records that can never be written go, with the reason.

A target is chosen by the path's extension: ``.jsonl`` (one JSON object per line, appended and
flushed at once) or ``.parquet`` (rows buffered and written in row groups; the file is complete
after :meth:`DeadLetterWriter.close`). Each dead letter holds the record's ``data`` (text when it is
valid UTF-8, otherwise base64, as said by ``data_encoding``), ``partition_key``, ``shard_id``,
``client_info`` (base64), ``row`` (its row in the written batch), ``origin`` (where the source
read it, when the source says: the source's origin columns, e.g. Kafka's ``{"topic", "partition",
"offset", "key"}``, and/or its position, e.g. Parquet's ``{"file", "row_group", "row",
"file_row"}``; a JSON object in ``.jsonl``, its JSON text in ``.parquet``), ``error`` (what the
server or the engine said), ``reason`` (why it is final) and ``time`` (UTC, ISO-8601).

With no target configured the sink still counts dead letters and keeps the latest ones in memory
(:attr:`DeadLetterWriter.recent`), and logs a warning for the first one.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shardline.errors import ConfigError
from shardline.redact import redact_url

log = logging.getLogger("shardline.sink")

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("data", pa.string()),
        ("data_encoding", pa.string()),
        ("partition_key", pa.string()),
        ("shard_id", pa.int64()),
        ("client_info", pa.string()),
        ("row", pa.int64()),
        ("origin", pa.string()),
        ("error", pa.string()),
        ("reason", pa.string()),
        ("time", pa.string()),
    ]
)


def dead_letter_entry(stream: str, record: dict[str, Any], error: str, reason: str) -> dict[str, Any]:
    """One dead letter as a flat dict (the JSONL line and the Parquet row)."""
    data = record.get("data") or b""
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode("ascii"), "base64"
    ci = record.get("client_info")
    return {
        "stream": redact_url(stream),
        "data": text,
        "data_encoding": encoding,
        "partition_key": record.get("partition_key"),
        "shard_id": record.get("shard_id"),
        "client_info": base64.b64encode(ci).decode("ascii") if ci is not None else None,
        "row": record.get("row"),
        "origin": record.get("origin"),
        "error": error,
        "reason": reason,
        "time": dt.datetime.now(dt.UTC).isoformat(),
    }


class DeadLetterWriter:
    """Writes dead letters to a ``.jsonl`` or ``.parquet`` file, or keeps them in memory.

    ``recent`` holds the last ``keep`` dead letters in any case; ``count`` counts them all.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, *, keep: int = 1000, parquet_row_group: int = 10_000
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._rows: list[dict[str, Any]] = []
        self._row_group = parquet_row_group
        self._parquet: pq.ParquetWriter | None = None
        self._jsonl: Any = None
        self._warned = False
        if self.path is not None:
            suffix = self.path.suffix.lower()
            if suffix not in (".jsonl", ".parquet"):
                raise ConfigError(f"dead_letter={str(self.path)!r}: the file must end in .jsonl or .parquet")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".jsonl":
                self._jsonl = self.path.open("ab")

    def write(self, entry: dict[str, Any]) -> None:
        """Record one dead letter (see :func:`dead_letter_entry`)."""
        self.count += 1
        self.recent.append(entry)
        if self._jsonl is not None:
            self._jsonl.write(orjson.dumps(entry, default=str) + b"\n")
            self._jsonl.flush()
        elif self.path is not None:
            self._rows.append(entry)
            if len(self._rows) >= self._row_group:
                self._flush_parquet()
        elif not self._warned:
            self._warned = True
            log.warning(
                "a record could not be written (%s) and no dead_letter file is configured; dead letters "
                "are counted in sink.metrics and the latest are kept in sink.dead_letters",
                entry["reason"],
            )

    def _flush_parquet(self) -> None:
        if not self._rows or self.path is None:
            return
        rows = [
            {
                **r,
                "origin": orjson.dumps(r["origin"], default=str).decode()
                if r.get("origin") is not None
                else None,
            }
            for r in self._rows
        ]
        table = pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, DEAD_LETTER_SCHEMA)
        self._parquet.write_table(table)
        self._rows.clear()

    def flush(self) -> None:
        """Make every dead letter so far durable (Parquet: write the pending row group)."""
        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())

    def close(self) -> None:
        """Finish the file (Parquet: write the footer; an empty Parquet target gets an empty file)."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self.path is not None and self.path.suffix.lower() == ".parquet":
            self._flush_parquet()
            if self._parquet is None and self.count:
                self._parquet = pq.ParquetWriter(self.path, DEAD_LETTER_SCHEMA)
            if self._parquet is not None:
                self._parquet.close()
                self._parquet = None
