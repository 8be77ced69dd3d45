"""Dead-letter targets: where records that can never be written go, with the reason.

A target is chosen by the path's extension:

- ``.jsonl``: one file, one JSON object per line, appended (and handed to the OS) at once.
- ``.parquet``: a *directory* of complete Parquet part files, as Spark and pyarrow datasets lay them
  out; ``pyarrow.parquet.read_table("dead.parquet")`` or ``pyarrow.dataset.dataset("dead.parquet")``
  reads every dead letter as one table, in write order (part names sort by time). Rows are kept in
  memory until :meth:`DeadLetterWriter.flush` (or until ``parquet_row_group`` rows are pending),
  which writes them as one new file ``part-<UTC time>-<pid>-<n>.parquet``: first under a hidden
  temporary name (``.part-….tmp``, which readers skip), then fsynced, renamed into place and the
  directory fsynced, so a crash never leaves a half-written file under a final name. A single
  Parquet *file* at the path (the layout of earlier versions) is never touched: opening the target
  raises :class:`~shardline.errors.ConfigError` saying to move it.

**Durability**: when :meth:`DeadLetterWriter.flush` returns, every dead letter written so far is on
disk (JSONL: flushed and fsynced, and the directory fsynced when the file was just created;
Parquet: a complete, fsynced part file). The sink engine flushes before every ack that follows dead
letters, so a dead letter is on disk before the ack that lets the source commit past it: ``kill -9``
at any moment loses no dead letter whose source position was committed. :attr:`pending` says whether
a flush has anything to do; a flush with nothing pending does nothing (and writes no file).

Each dead letter holds the record's ``data`` (text when it is valid UTF-8, otherwise base64, as said
by ``data_encoding``), ``partition_key``, ``shard_id``, ``client_info`` (base64), ``row`` (its row in
the written batch), ``error`` (what the server or the engine said), ``reason`` (why it is final) and
``time`` (UTC, ISO-8601) and ``origin`` (where the source read it, when the source says: its
origin columns, e.g. Kafka's ``{"topic", "partition", "offset", "key"}``, and/or its position, e.g.
Parquet's ``{"file", "row_group", "row", "file_row"}``; a JSON object in ``.jsonl``, its JSON text
in ``.parquet``).

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
from typing import IO, Any

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


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (files created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DeadLetterWriter:
    """Writes dead letters to a ``.jsonl`` file or a ``.parquet`` directory, or keeps them in memory.

    ``recent`` holds the last ``keep`` dead letters in any case; ``count`` counts them all;
    :attr:`pending` counts those written since the last :meth:`flush`. ``parquet_row_group``
    (rows) bounds the rows a Parquet target keeps in memory: reaching it writes a part file.

    Raises :class:`~shardline.errors.ConfigError` for a path with another extension, or a
    ``.parquet`` path that is an existing file rather than a directory.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, *, keep: int = 1000, parquet_row_group: int = 10_000
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._kind: str | None = None
        self._rows: list[dict[str, Any]] = []
        self._row_group = max(1, parquet_row_group)
        self._jsonl: IO[bytes] | None = None
        self._unsynced = 0  # JSONL lines written since the last fsync
        self._dir_unsynced = False  # an entry was created whose directory is not yet fsynced
        self._parts = 0
        self._last_stamp = ""
        self._warned = False
        if self.path is None:
            return
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".parquet"):
            raise ConfigError(f"dead_letter={str(self.path)!r}: the file must end in .jsonl or .parquet")
        self._kind = suffix[1:]
        if self._kind == "parquet" and self.path.exists() and not self.path.is_dir():
            raise ConfigError(
                f"dead_letter={str(self.path)!r} is a single Parquet file (an older layout); a .parquet "
                "target is now a directory of part files: move that file away (it stays readable), run again"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._kind == "jsonl":
            self._open_jsonl()

    @property
    def pending(self) -> int:
        """Dead letters written since the last :meth:`flush` (0: a flush has nothing to do)."""
        return self._unsynced if self._kind == "jsonl" else len(self._rows)

    def _open_jsonl(self) -> IO[bytes]:
        assert self.path is not None
        if self._jsonl is None:
            if not self.path.exists():
                self._dir_unsynced = True
            self._jsonl = self.path.open("ab")
        return self._jsonl

    def write(self, entry: dict[str, Any]) -> None:
        """Record one dead letter (see :func:`dead_letter_entry`); durable after :meth:`flush`.

        Raises OSError when the target cannot be written.
        """
        self.count += 1
        self.recent.append(entry)
        if self._kind == "jsonl":
            out = self._open_jsonl()
            out.write(orjson.dumps(entry, default=str) + b"\n")
            out.flush()  # in the OS at once: survives a crash of the process, not yet of the machine
            self._unsynced += 1
        elif self._kind == "parquet":
            self._rows.append(entry)
            if len(self._rows) >= self._row_group:
                self._write_part()
        elif not self._warned:
            self._warned = True
            log.warning(
                "a record could not be written (%s) and no dead_letter file is configured; dead letters "
                "are counted in sink.metrics and the latest are kept in sink.dead_letters",
                entry["reason"],
            )

    def _part_name(self) -> str:
        """``part-<UTC time>-<pid>-<n>.parquet``; names sort in write order within a process."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        stamp = max(stamp, self._last_stamp)  # a clock stepping back must not reorder the parts
        self._last_stamp = stamp
        self._parts += 1
        return f"part-{stamp}-{os.getpid()}-{self._parts:06d}.parquet"

    def _write_part(self) -> None:
        """Write the pending rows as one complete part file: temp name, fsync, rename, fsync dir."""
        if not self._rows:
            return
        assert self.path is not None
        if not self.path.is_dir():
            self.path.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.path.parent)
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
        final = self.path / self._part_name()
        temp = self.path / f".{final.name}.tmp"
        try:
            with temp.open("wb") as out:
                pq.write_table(table, out, row_group_size=len(self._rows))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)
        self._rows.clear()

    def flush(self) -> None:
        """Make every dead letter written so far durable on disk; does nothing when none is pending.

        JSONL: flush and fsync the file (and its directory, when the file was just created).
        Parquet: write the pending rows as one new complete part file. Raises OSError when the
        target cannot be written (the rows stay pending).
        """
        if self._kind == "jsonl" and self._jsonl is not None and self._unsynced:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
            if self._dir_unsynced:
                assert self.path is not None
                _fsync_dir(self.path.parent)
                self._dir_unsynced = False
            self._unsynced = 0
        elif self._kind == "parquet":
            self._write_part()

    def close(self) -> None:
        """Flush what is pending and close the file; a later write opens the target again."""
        try:
            self.flush()
        finally:
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None
