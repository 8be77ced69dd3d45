"""Arrow record batch -> stream records, column-at-a-time.

Two stages:

1. :func:`map_columns` turns a batch into the fields of its records (Data through a codec, the
   partition key, optional client info and explicit shard), checks the stream's per-record limits
   (its :class:`~shardline.wire.WireLimits`), and hashes each distinct partition key once. It raises
   :class:`~shardline.errors.SchemaError` for a missing column or a column of the wrong type before
   anything is sent. It does not depend on the shard map.
2. :func:`place` assigns each record a lane of the :class:`~shardline.ShardMap` and has the
   transport's :class:`~shardline.wire.Wire` encode each record's request fragment, ordered by
   shard, in one contiguous buffer: a request body is then a few buffer slices, with no per-record
   Python work.

The built-in Data codecs are ``json`` (one JSON object per row), ``raw`` (a binary or string column
as is), ``arrow`` (each row as an Arrow IPC stream, so readers keep the schema) and ``template``
(a :meth:`str.format` template over columns). Codecs are registered through
``shardline_register_codecs`` like any plugin's.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shardline.arrowbin import (
    data_view,
    is_binary_view,
    is_string_view,
    offsets,
    plain,
    to_large_binary,
)
from shardline.errors import ConfigError, SchemaError
from shardline.ipcrows import one_row_streams
from shardline.jsontext import counting, escape_strings, json_is_string, json_values, text_values
from shardline.md5many import md5_many
from shardline.ownership import ShardOwnership
from shardline.partitioning import Partitioner, ShardMap, resolve_partitioner, xxh64_many
from shardline.wire import Placement, Wire, WireLimits

Codec = Callable[[pa.RecordBatch, "RecordMapping"], "pa.Array | Sequence[bytes]"]
"""A Data codec: ``codec(batch, mapping)`` returns one Data value per row (binary array or bytes)."""

Origin = Callable[[int], dict[str, Any]]
"""``origin(row)``: where row ``row`` of a written batch came from (the source's position)."""

PARTITIONERS = ("hash", "modulo", "server", "column", "round-robin")
"""The built-in partitioners (plugins may register more)."""


@dataclass(frozen=True)
class RecordMapping:
    """How columns of a batch become stream records.

    ``data`` names the codec; ``data_column`` is the column of the ``raw`` codec; ``columns``
    restricts the ``json`` and ``arrow`` codecs to some columns (default: all); ``template`` is the
    format string of the ``template`` codec. ``partitioner`` is one of :data:`PARTITIONERS`.
    ``origin_columns`` names columns (e.g. Kafka's topic, partition, offset, key) copied into the dead
    letters of a batch's rows to say where each came from; those a batch lacks are left out.
    """

    data: str = "json"
    data_column: str | None = None
    partition_key: str | None = None
    client_info: str | None = None
    shard_id: str | None = None
    partitioner: str = "hash"
    template: str | None = None
    columns: tuple[str, ...] | None = None
    origin_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.shard_id and self.partitioner not in ("column", "hash"):
            raise ConfigError(
                f"shard_id={self.shard_id!r} needs partitioner 'column', not {self.partitioner!r}"
            )
        if self.effective_partitioner == "column" and not self.shard_id:
            raise ConfigError("partitioner 'column' needs shard_id=<column holding the shard id>")
        strategy = resolve_partitioner(self.effective_partitioner)
        if strategy.needs_key and not self.partition_key:
            raise ConfigError(f"partitioner {self.partitioner!r} needs partition_key=<column>")

    @property
    def effective_partitioner(self) -> str:
        """The strategy actually used (``shard_id`` implies ``column``; ``hash`` without a key is
        ``round-robin``)."""
        if self.shard_id:
            return "column"
        if self.partitioner == "hash" and not self.partition_key:
            return "round-robin"
        return self.partitioner


# ---------------------------------------------------------------------------------------------
# codecs

_LB = pa.large_binary()
_LS = pa.large_string()
_offsets = offsets
_data_view = data_view
_escape_strings = escape_strings


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


def _column(batch: pa.RecordBatch, name: str, role: str) -> pa.Array:
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        have = ", ".join(batch.schema.names) or "none"
        raise SchemaError(f"{role} column {name!r} is not in the batch (columns: {have})")
    return batch.column(idx)


def json_codec(batch: pa.RecordBatch, mapping: RecordMapping) -> pa.Array:
    """``json``: one JSON object per row over ``mapping.columns`` (default: every column).

    Each value is encoded by :func:`shardline.jsontext.json_values` (the README's type table).
    Raises :class:`SchemaError` naming the column for a type with no JSON encoding.
    """
    names = list(mapping.columns) if mapping.columns else list(batch.schema.names)
    n = batch.num_rows
    if not names:
        return pa.array([b"{}"] * n, _LB)
    pieces: list[pa.Array | pa.Scalar] = []
    literal = b""
    for i, name in enumerate(names):
        text, before, after = _json_parts(_column(batch, name, "json"), name)
        pieces.append(_lb(literal + (b"{" if i == 0 else b",") + orjson.dumps(name) + b":" + before))
        pieces.append(text)
        literal = after
    pieces.append(_lb(literal + b"}"))
    return pc.binary_join_element_wise(*pieces, _lb(b""))


def _json_parts(col: pa.Array, name: str) -> tuple[pa.Array, bytes, bytes]:
    """``(text, before, after)`` with each row's JSON being ``before + text + after``.

    Lets :func:`json_codec` put the quotes of null-free string-like columns into the literal
    pieces of its one join, saving a pass per column; other columns come from :func:`json_values`.
    """
    col = plain(col, keep_uuid=True)
    t = col.type
    if col.null_count == 0 and len(col):
        if pa.types.is_dictionary(t) and json_is_string(t) and not pa.types.is_nested(t.value_type):
            text, before, after = _json_parts(col.dictionary, name)
            if before:
                return text.take(col.indices), before, after
        if pa.types.is_string(t) or pa.types.is_large_string(t) or is_string_view(t):
            text = col.cast(_LS)
            if not pc.any(pc.match_substring_regex(text, r'["\\\x00-\x1f]')).as_py():
                return text.cast(_LB), b'"', b'"'
        elif pa.types.is_timestamp(t):
            naive = col.view(pa.timestamp(t.unit)) if t.tz else col  # the stored values are UTC
            text = pc.replace_substring(naive.cast(_LS), " ", "T", max_replacements=1).cast(_LB)
            return text, b'"', b'Z"' if t.tz else b'"'
        elif pa.types.is_date(t) or pa.types.is_time(t):
            return col.cast(_LS).cast(_LB), b'"', b'"'
    return json_values(col, name), b"", b""


def raw_codec(batch: pa.RecordBatch, mapping: RecordMapping) -> pa.Array:
    """``raw``: the binary or string column ``mapping.data_column`` as is."""
    if not mapping.data_column:
        raise ConfigError("data='raw' needs data_column=<binary or string column>")
    col = plain(_column(batch, mapping.data_column, "data"))
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not _bytes_like(t):
        raise SchemaError(
            f"data column {mapping.data_column!r} has type {col.type}; the raw codec needs a binary or "
            f"string column (use data='json' to encode other types)"
        )
    return to_large_binary(col)


_IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _has_dictionary(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return True
    if isinstance(t, pa.ExtensionType):
        return _has_dictionary(t.storage_type)
    return any(_has_dictionary(t.field(i).type) for i in range(t.num_fields))


def arrow_codec(batch: pa.RecordBatch, mapping: RecordMapping) -> pa.Array:
    """``arrow``: each row as a one-row Arrow IPC stream (schema included), over ``mapping.columns``.

    Flat batches (fixed-width, bool, binary and string columns) are built column-wise by
    :func:`shardline.ipcrows.one_row_streams`. Otherwise one IPC writer writes every row as a
    one-row batch into one buffer and each record is the schema message, that row's batch message
    and the end-of-stream marker, joined column-wise. Batches with dictionary columns (whose
    messages must precede each row's batch) write one stream per row.
    """
    if mapping.columns:
        batch = batch.select(list(mapping.columns))
    n = batch.num_rows
    fast = one_row_streams(batch)
    if fast is not None:
        return fast
    if any(_has_dictionary(f.type) for f in batch.schema):
        out: list[bytes] = []
        for i in range(n):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch.slice(i, 1))
            out.append(sink.getvalue().to_pybytes())
        return pa.array(out, _LB)
    if n == 0:
        return pa.array([], _LB)
    schema_msg = batch.schema.serialize().to_pybytes()
    sink = pa.BufferOutputStream()
    positions = np.empty(n + 1, dtype=np.int64)
    positions[0] = len(schema_msg)
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        write, tell, row = writer.write_batch, sink.tell, batch.slice
        for i in range(n):
            write(row(i, 1))
            positions[i + 1] = tell()
    buf = sink.getvalue()
    if buf[: len(schema_msg)].to_pybytes() != schema_msg:  # a writer that frames the schema otherwise
        raise SchemaError("arrow codec: the IPC writer wrote an unexpected schema message")
    messages = pa.Array.from_buffers(_LB, n, [None, pa.py_buffer(positions), buf])
    return pc.binary_join_element_wise(_lb(schema_msg), messages, _lb(_IPC_EOS), _lb(b""))


def template_codec(batch: pa.RecordBatch, mapping: RecordMapping) -> pa.Array:
    """``template``: ``mapping.template`` (``str.format`` fields naming columns, no format specs).

    A field is written as :func:`shardline.jsontext.text_values` gives it: strings and binary as
    they are, timestamps/dates/times as ISO text, other values as their JSON text, nulls as nothing.
    """
    if not mapping.template:
        raise ConfigError("data='template' needs data_template='...{column}...'")
    pieces: list[pa.Array | pa.Scalar] = []
    for literal, fname, spec, conv in string.Formatter().parse(mapping.template):
        if literal:
            pieces.append(_lb(literal.encode()))
        if fname is None:
            continue
        if spec or conv:
            raise ConfigError(f"template field {{{fname}}}: format specs and conversions are not supported")
        text = text_values(_column(batch, fname, "template"), fname)
        pieces.append(text.fill_null(_lb(b"")) if text.null_count else text)
    if not pieces:
        return pa.array([mapping.template.encode()] * batch.num_rows, _LB)
    if len(pieces) == 1:
        pieces.append(_lb(b""))
    return pc.binary_join_element_wise(*pieces, _lb(b""))


BUILTIN_CODECS: dict[str, Codec] = {
    "json": json_codec,
    "raw": raw_codec,
    "arrow": arrow_codec,
    "template": template_codec,
}


def lookup_codec(name: str) -> Codec:
    """A codec by name: built-ins first, then those registered by plugins."""
    if name in BUILTIN_CODECS:
        return BUILTIN_CODECS[name]
    from shardline import plugins

    codec: Codec = plugins.lookup("codecs", name)
    return codec


def batch_nbytes(batch: pa.RecordBatch) -> int:
    """Bytes a batch's rows reference, for any column type.

    ``RecordBatch.nbytes`` raises ``ArrowTypeError`` for string/binary views (pyarrow cannot take
    their byte ranges); those columns count their whole buffers instead (an over-estimate for a
    slice, never an error).
    """
    try:
        return int(batch.nbytes)
    except (pa.ArrowTypeError, pa.ArrowNotImplementedError):
        total = 0
        for col in batch.columns:
            try:
                total += int(col.nbytes)
            except (pa.ArrowTypeError, pa.ArrowNotImplementedError):
                total += int(col.get_total_buffer_size())
        return total


# ---------------------------------------------------------------------------------------------
# stage 1: columns -> record fields


class KeyValues(Sequence[str]):
    """The distinct partition keys of a batch, read from Arrow only when asked for."""

    def __init__(self, values: pa.Array) -> None:
        self._values = values
        self._list: list[str] | None = None
        self._utf8: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def utf8(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """The keys' UTF-8 bytes as (offsets, bytes), for the vectorised hashes (read once)."""
        if self._utf8 is None:
            raw = self._values.cast(_LB)
            self._utf8 = (_offsets(raw), np.frombuffer(_data_view(raw), dtype=np.uint8))
        return self._utf8

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if self._list is not None:
            return self._list[i]
        value: str = self._values[i].as_py()
        return value

    def __iter__(self) -> Iterator[str]:
        if self._list is None:
            self._list = self._values.to_pylist()
        return iter(self._list)


@dataclass
class MappedColumns:
    """The fields of a batch's records, independent of the shard count (stage 1)."""

    num_rows: int
    data: pa.Array  # large_binary, nulls filled with b""
    reasons: list[str | None]  # per row: why it can never be written (dead letter), or None
    invalid: npt.NDArray[np.bool_]
    key_index: npt.NDArray[np.int64] | None = None  # per row index into key_values, -1 = no key
    key_values: Sequence[str] = ()
    # per distinct key: a 64-bit hash naming it in the engine (see key_hashes_of); None until asked
    key_hashes: npt.NDArray[np.uint64] | None = None
    key_json: pa.Array | None = None  # per distinct key: its JSON string literal
    key_hash_keys: npt.NDArray[np.uint64] | None = None  # per distinct key: MD5 halves (hash-range maps)
    client_info: pa.Array | None = None  # large_binary or None
    shard_ids: npt.NDArray[np.int64] | None = None
    row_base: int = 0  # row of the written batch where these rows start (the sink writes chunks)
    origin: Origin | None = None  # where a row of the written batch came from (dead letters)
    origin_columns: dict[str, pa.Array] | None = None  # the source's origin columns, per row
    nonfinite_floats: int = 0  # NaN/inf values the codec wrote as null (json: at any depth)
    absorbed: npt.NDArray[np.bool_] | None = None  # rows a wire's pack() put into an earlier row's record

    @property
    def data_lengths(self) -> npt.NDArray[np.int64]:
        """Bytes of each record's Data."""
        return np.diff(_offsets(self.data))


def _scalar_type(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_null(t))


def _binary_like(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or is_binary_view(t)
    )


def _bytes_like(t: pa.DataType) -> bool:
    """Binary or text: a column whose values can be sent as bytes as they are."""
    return _binary_like(t) or bool(pa.types.is_string(t) or pa.types.is_large_string(t) or is_string_view(t))


NOT_UTF8_KEY = "partition key is not UTF-8 text"


def _utf8_or_null(col: pa.Array) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    """Binary keys as text, and the mask of values that are not UTF-8 (those become nulls).

    Only reached when the vectorised cast failed (some key of the batch is not UTF-8, e.g. a Kafka
    key of raw bytes): those rows are dead-lettered one by one, the rest of the batch goes on.
    """
    texts: list[str | None] = []
    bad: list[bool] = []
    for value in col.to_pylist():
        try:
            texts.append(value.decode("utf-8") if value is not None else None)
            bad.append(False)
        except UnicodeDecodeError:
            texts.append(None)
            bad.append(True)
    return pa.array(texts, _LS), np.asarray(bad, dtype=np.bool_)


def _key_strings(col: pa.Array, name: str) -> tuple[pa.Array, npt.NDArray[np.bool_] | None]:
    """The key column as text, and the rows whose key is not UTF-8 text (None when there are none).

    Strings are keys as they are, binary keys their UTF-8 text, other scalars Arrow's cast to
    string (``10``, ``1.5``, ``2024-01-02 03:04:05``), UUIDs their canonical text and types with no
    cast (intervals) their JSON text.
    """
    col = plain(col, keep_uuid=True)
    t = col.type
    if isinstance(t, pa.BaseExtensionType):  # arrow.uuid
        return text_values(col, name).cast(_LS), None
    if pa.types.is_null(t):  # no row has a key
        return pa.nulls(len(col), _LS), None
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not _scalar_type(t):
        raise SchemaError(f"partition_key column {name!r} has type {col.type}; a key must be a scalar column")
    try:
        if pa.types.is_dictionary(col.type):
            values, bad_values = _key_strings(col.dictionary, name)
            keys = pa.DictionaryArray.from_arrays(col.indices, values)
            if bad_values is None:
                return keys, None
            index = np.asarray(col.indices.fill_null(0), dtype=np.int64)
            return keys, bad_values[index] & ~np.asarray(col.is_null(), dtype=np.bool_)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return col, None
        try:
            return col.cast(_LS), None
        except pa.ArrowNotImplementedError:
            return text_values(col, name).cast(_LS), None  # no cast to string: the JSON text
        except pa.ArrowInvalid:
            if not _binary_like(t):
                raise
            return _utf8_or_null(col)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"partition_key column {name!r} ({col.type}) cannot be turned into text keys: {exc}"
        ) from exc


def map_columns(
    batch: pa.RecordBatch | pa.Table, mapping: RecordMapping, limits: WireLimits
) -> MappedColumns:
    """Stage 1: validate the mapping against ``batch`` and compute every record field per row.

    ``limits`` are the stream's (its transport's ``wire.limits``). Raises :class:`SchemaError` when
    a mapped column is missing or has the wrong type, or when the mapping asks for ClientInfo and
    the stream has none. Rows that can never be written (a record over ``max_record_bytes``, a key
    too long or too short, a missing key where the stream needs one, ClientInfo too long, null Data,
    a bad ShardId) are marked in ``invalid`` with a reason; they go to the dead-letter target.
    """
    if isinstance(batch, pa.Table):
        batch = (
            batch.combine_chunks().to_batches()[0]
            if batch.num_rows
            else pa.record_batch([pa.array([], f.type) for f in batch.schema], schema=batch.schema)
        )
    n = batch.num_rows
    # validate the non-codec columns first: cheap, and a SchemaError must come before any work
    check_mapping(mapping, limits)
    key_col = _column(batch, mapping.partition_key, "partition_key") if mapping.partition_key else None
    ci_col = plain(_column(batch, mapping.client_info, "client_info")) if mapping.client_info else None
    sid_col = plain(_column(batch, mapping.shard_id, "shard_id")) if mapping.shard_id else None
    if sid_col is not None and pa.types.is_dictionary(sid_col.type):
        sid_col = sid_col.dictionary_decode()
    if ci_col is not None:
        t = ci_col.type.value_type if pa.types.is_dictionary(ci_col.type) else ci_col.type
        if not _bytes_like(t):
            raise SchemaError(
                f"client_info column {mapping.client_info!r} has type {ci_col.type}; "
                f"it must be binary or string (at most {limits.max_client_info_bytes} bytes)"
            )
    if sid_col is not None and not pa.types.is_integer(sid_col.type):
        raise SchemaError(
            f"shard_id column {mapping.shard_id!r} has type {sid_col.type}; it must be an integer"
        )
    keys, bad_keys = (
        _key_strings(key_col, mapping.partition_key or "") if key_col is not None else (None, None)
    )

    codec = lookup_codec(mapping.data)
    with counting() as stats:
        produced = codec(batch, mapping)
    if isinstance(produced, pa.ChunkedArray | pa.Array):
        data = to_large_binary(produced)
    else:
        data = pa.array(list(produced), _LB)
    if len(data) != n:
        raise SchemaError(f"codec {mapping.data!r} returned {len(data)} values for {n} rows")

    reasons: list[str | None] = [None] * n
    invalid = np.zeros(n, dtype=np.bool_)

    def mark(mask: npt.NDArray[np.bool_], reason: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask & ~invalid):
            reasons[int(i)] = reason(int(i))
        invalid[mask] = True

    if data.null_count:
        mark(np.asarray(data.is_null(), dtype=np.bool_), lambda i: "Data is null")
        data = data.fill_null(b"")
    if bad_keys is not None:
        mark(bad_keys, lambda i: NOT_UTF8_KEY)

    out = MappedColumns(
        num_rows=n, data=data, reasons=reasons, invalid=invalid, nonfinite_floats=stats.nonfinite_floats
    )
    if mapping.origin_columns:
        names = batch.schema.names
        out.origin_columns = {
            name: batch.column(name) for name in mapping.origin_columns if name in names
        } or None
    key_bytes = np.zeros(n, np.int64)  # per row: its key's UTF-8 bytes (0 without a key)
    if keys is not None:
        denc = keys if pa.types.is_dictionary(keys.type) else pc.dictionary_encode(keys)
        uniques = denc.dictionary
        idx = denc.indices
        index = np.asarray(idx.fill_null(-1), dtype=np.int64) if idx.null_count else np.asarray(idx, np.int64)
        text = uniques.cast(_LS)
        out.key_values = key_values = KeyValues(text)
        key_offsets = key_values.utf8()[0]
        out.key_index = index
        out.key_json = _escape_strings(text)
        key_bytes = np.concatenate([np.diff(key_offsets), np.zeros(1, np.int64)])[index]
        _check_keys(mark, limits, text, index, key_bytes)
    dlen = np.diff(_offsets(data))
    _check_record_sizes(mark, limits, dlen, key_bytes)
    if ci_col is not None:
        ci = to_large_binary(ci_col)
        ci_len = np.diff(_offsets(ci.fill_null(b"") if ci.null_count else ci))
        most = limits.max_client_info_bytes
        mark(ci_len > most, lambda i: f"client info is {int(ci_len[i])} bytes; the limit is {most} bytes")
        out.client_info = ci
    if sid_col is not None:
        if sid_col.null_count:
            mark(np.asarray(sid_col.is_null(), dtype=np.bool_), lambda i: "shard id is null")
        sids = np.asarray(sid_col.fill_null(0), dtype=np.int64)
        mark(sids < 0, lambda i: f"shard id {int(sids[i])} is negative")
        out.shard_ids = sids
    return out


def check_mapping(mapping: RecordMapping, limits: WireLimits) -> None:
    """Raise :class:`SchemaError` when ``mapping`` asks for a field the stream's protocol lacks."""
    if mapping.client_info and not limits.client_info:
        raise SchemaError(
            f"client_info={mapping.client_info!r}: this stream's protocol has no client info field; "
            f"remove client_info from the mapping (or put the value into Data)"
        )


Mark = Callable[[npt.NDArray[np.bool_], Callable[[int], str]], None]


def _check_keys(
    mark: Mark,
    limits: WireLimits,
    text: pa.Array,
    index: npt.NDArray[np.int64],
    key_bytes: npt.NDArray[np.int64],
) -> None:
    """Mark rows whose key is too long, too short, or missing where the stream needs one."""
    if limits.key_length_unit == "chars":
        chars = np.asarray(pc.utf8_length(text).fill_null(0), dtype=np.int64)
        key_len = np.concatenate([chars, np.zeros(1, np.int64)])[index]
        unit = "characters"
    else:
        key_len, unit = key_bytes, "bytes"
    most, least = limits.max_key_length, limits.min_key_length
    has_key = index >= 0
    mark(
        key_len > most,
        lambda i: f"PartitionKey is {int(key_len[i])} {unit}; the limit is {most} {unit}",
    )
    if least > 0:
        mark(
            has_key & (key_len < least),
            lambda i: f"PartitionKey is {int(key_len[i])} {unit}; the stream needs at least {least}",
        )
    if limits.key_required:
        mark(~has_key, lambda i: "PartitionKey is null; the stream needs a key for every record")


def _check_record_sizes(
    mark: Mark, limits: WireLimits, dlen: npt.NDArray[np.int64], key_bytes: npt.NDArray[np.int64]
) -> None:
    """Mark rows over the stream's per-record size (Data, plus the key when the stream counts it)."""
    most = limits.max_record_bytes
    if limits.record_counts_key:
        size = dlen + key_bytes
        mark(
            size > most,
            lambda i: (
                f"record is {int(size[i])} bytes (Data {int(dlen[i])} + PartitionKey {int(key_bytes[i])}); "
                f"the limit is {most} bytes"
            ),
        )
    else:
        mark(dlen > most, lambda i: f"Data is {int(dlen[i])} bytes; the limit is {most} bytes")


# ---------------------------------------------------------------------------------------------
# stage 2: shards and request fragments


@dataclass
class EncodedBatch:
    """A batch's valid records placed on shards, ordered by shard, as the wire's request fragments.

    Every per-record array is in the same (shard-sorted) order. ``fragments`` holds each record's
    encoded fragment (separator included); record ``i`` is ``fragments[offsets[i]:offsets[i+1]]``.
    ``shards`` are lanes of ``shard_map`` (of ``generation``); ``send_shard_id`` is True when the
    fragments name their shard (the partitioner chose it).
    """

    shard_count: int
    num_records: int
    shards: npt.NDArray[np.int64]
    key_hashes: npt.NDArray[np.uint64]  # per record; rows without a key get distinct pseudo-keys
    offsets: npt.NDArray[np.int64]
    fragments: memoryview
    data: pa.Array  # large_binary, shard-sorted
    rows: npt.NDArray[np.int64]  # row number in the written batch
    key_index: npt.NDArray[np.int64] | None
    key_values: Sequence[str]
    client_info: pa.Array | None
    send_shard_id: bool
    dead: list[tuple[int, str]]  # (row, reason) of rows that can never be written
    shard_bounds: dict[int, tuple[int, int]] = field(default_factory=dict)
    # per shard (placed with generations): where each generation of its records ends, relative to
    # its start in shard_bounds; a generation holds distinct keys, and every key of a generation is
    # in the one before it
    shard_generations: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict)
    data_offsets: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(1, np.int64))
    row_base: int = 0
    origin: Origin | None = None
    origin_columns: dict[str, pa.Array] | None = None  # origin columns in batch row order
    not_owned: int = 0  # rows left out because another writer owns them (shardline.ownership)
    generation: int = 0  # of the shard map the records were placed for
    shard_map: ShardMap | None = None
    fragment_array: Any = None  # the fragments as a large_binary array (``fragments`` is its buffer)
    _key_list: list[str] | None = None

    def key_list(self) -> list[str]:
        """The distinct keys as a list (materialised once)."""
        if self._key_list is None:
            self._key_list = list(self.key_values)
        return self._key_list

    @property
    def nbytes(self) -> int:
        """Bytes this batch holds in memory (fragments plus raw data)."""
        return int(self.offsets[-1] - self.offsets[0]) + int(self.data.nbytes)

    def record(self, i: int) -> dict[str, Any]:
        """Record ``i`` as plain fields (for dead letters and transports without a body path)."""
        key = None
        if self.key_index is not None and self.key_index[i] >= 0:
            key = self.key_values[int(self.key_index[i])]
        ci = None
        if self.client_info is not None and self.client_info[i].is_valid:
            ci = self.client_info[i].as_py()
        lane = int(self.shards[i])
        return _with_origin(
            {
                "data": self.data[i].as_py(),
                "partition_key": key,
                "shard_id": self.shard_map.shard_id(lane) if self.shard_map is not None else lane,
                "client_info": ci,
                "row": self.row_base + int(self.rows[i]),
            },
            self.origin,
            self.origin_columns,
            int(self.rows[i]),
        )


def key_hashes_of(cols: MappedColumns) -> npt.NDArray[np.uint64]:
    """Per distinct key of ``cols``: the 64-bit hash the engine tells keys apart by (one request
    holds one record per hash), computed once. The low half of the key's MD5 when placement already
    took it (a hash-range map routing by key: every batch of such a sink), else xxh64 of its UTF-8
    bytes (the count map's jump hash uses that one). Two keys of one hash are only held to one
    record per request together: never out of order."""
    if cols.key_hashes is None:
        if cols.key_hash_keys is not None:
            cols.key_hashes = np.ascontiguousarray(cols.key_hash_keys[:, 1])  # saves xxh64's pass
        else:
            cols.key_hashes = xxh64_many(*_key_values(cols.key_values).utf8())
    return cols.key_hashes


def _key_values(keys: Sequence[str]) -> KeyValues:
    """``keys`` as :class:`KeyValues` (map_columns makes them so; a hand-built MappedColumns may
    hold a plain sequence), for their UTF-8 bytes."""
    return keys if isinstance(keys, KeyValues) else KeyValues(pa.array(list(keys), _LS))


def _shards_for(
    cols: MappedColumns, shard_map: ShardMap, strategy: Partitioner, rr_start: int
) -> npt.NDArray[np.int64]:
    """Each row's lane: its explicit shard, its key's lane under ``strategy``, or round robin."""
    n = cols.num_rows
    if n == 0:
        return np.zeros(0, np.int64)
    if strategy.name == "column":
        assert cols.shard_ids is not None
        return cols.shard_ids.copy()
    shard_count = shard_map.shard_count
    rr = (rr_start + np.arange(n, dtype=np.int64)) % shard_count
    if strategy.per_key is None or cols.key_index is None:
        return rr
    if shard_map.hash_range and strategy.by_key_hash:  # where the stream routes each key
        if cols.key_hash_keys is None:
            cols.key_hash_keys = md5_many(*_key_values(cols.key_values).utf8())  # once per distinct key
        per_key = shard_map.lanes_of_hash_keys(cols.key_hash_keys)
    else:
        per_key = np.asarray(
            strategy.per_key(cols.key_values, key_hashes_of(cols), shard_count), dtype=np.int64
        )
    if per_key.shape != (len(cols.key_values),):
        raise SchemaError(
            f"partitioner {strategy.name!r} returned {per_key.shape} shards for {len(cols.key_values)} keys"
        )
    per_key = np.concatenate([per_key, np.zeros(1, np.int64)])
    shards = per_key[cols.key_index]
    no_key = cols.key_index < 0
    if no_key.any():
        shards[no_key] = rr[no_key]
    return shards


def place(
    cols: MappedColumns,
    shard_map: ShardMap | int,
    strategy: str | Partitioner = "hash",
    rr_start: int = 0,
    *,
    wire: Wire,
    owned: ShardOwnership | None = None,
    generations: bool = False,
) -> EncodedBatch:
    """Stage 2: assign each valid record a lane of ``shard_map`` (an int: a map of that many numbered
    shards) and encode the records' fragments with ``wire``, shard-sorted, in one buffer.

    With ``generations`` (the engine's one-record-per-key ordering), each shard's records are
    ordered by generation: every key's first record of the batch, then every key's second, ...,
    each generation in write order. A key's records keep their order; a request that takes one
    record per key then takes adjacent records (see :attr:`EncodedBatch.shard_generations`).

    With ``owned``, rows another writer owns (see :mod:`shardline.ownership`) are left out: they
    are neither records nor dead letters; ``EncodedBatch.not_owned`` counts them.
    """
    if isinstance(shard_map, int):
        shard_map = ShardMap(shard_map)
    if isinstance(strategy, str):
        strategy = resolve_partitioner(strategy)
    shard_count = shard_map.shard_count
    shards = _shards_for(cols, shard_map, strategy, rr_start)
    others: npt.NDArray[np.bool_] | None = None
    if owned is not None:
        owner = (  # ownership follows the shard count pinned for the run (numbered shards)
            shards
            if owned.shard_count == shard_count or shard_map.hash_range
            else _shards_for(cols, ShardMap(owned.shard_count), strategy, rr_start)
        )
        keyless = cols.key_index < 0 if cols.key_index is not None else None
        others = ~owned.keep(owner, keyless)  # another writer's rows, its dead letters too
    invalid = cols.invalid.copy() if others is None else cols.invalid & ~others
    dead: list[tuple[int, str]] = [
        (int(i), cols.reasons[int(i)] or "invalid") for i in np.flatnonzero(invalid)
    ]
    out_of_range = ((shards >= shard_count) | (shards < 0)) & ~invalid
    if others is not None:
        out_of_range &= ~others
    if out_of_range.any():
        for i in np.flatnonzero(out_of_range):
            dead.append(
                (int(i), f"shard {int(shards[i])} is out of range: the stream has {shard_count} shards")
            )
        invalid |= out_of_range
        dead.sort()
    not_owned = int(others.sum()) if others is not None else 0
    placed = ~invalid if cols.absorbed is None else ~(invalid | cols.absorbed)
    if others is not None and not_owned:
        placed &= ~others
    valid_rows = np.flatnonzero(placed)
    order = valid_rows[np.argsort(shards[valid_rows], kind="stable")]
    m = len(order)
    sorted_shards = shards[order]
    rank = None
    if generations and cols.key_index is not None and m:
        order, sorted_shards, rank = _by_generation(order, sorted_shards, cols.key_index[order])
    take = pa.array(order, pa.int64())
    data = cols.data.take(take)
    if cols.key_index is not None:
        key_index = cols.key_index[order]
        hashes_ext = np.concatenate([key_hashes_of(cols), np.zeros(1, np.uint64)])
        key_hashes = hashes_ext[key_index]
        no_key = key_index < 0
        if no_key.any():  # distinct pseudo-keys: never "repeated" in a request
            key_hashes[no_key] = (np.uint64(1) << np.uint64(63)) | order[no_key].astype(np.uint64)
    else:
        key_index = None
        key_hashes = (np.uint64(1) << np.uint64(63)) | order.astype(np.uint64)
    client_info = cols.client_info.take(take) if cols.client_info is not None else None
    # a hash-range stream routes keys itself: only explicit choices of a shard are addressed
    addressed = strategy.sends_shard_id and not (shard_map.hash_range and strategy.by_key_hash)
    if m:
        frags = to_large_binary(
            wire.fragments(
                Placement(
                    data=data,
                    key_json=cols.key_json,
                    key_index=key_index,
                    shards=sorted_shards,
                    shard_map=shard_map,
                    addressed=addressed,
                    client_info=client_info,
                )
            )
        )
        offsets = _offsets(frags)
        fragments = _data_view(frags)
    else:
        frags = None
        offsets = np.zeros(1, np.int64)
        fragments = memoryview(b"")
    bounds: dict[int, tuple[int, int]] = {}
    if m:
        uniq, starts = np.unique(sorted_shards, return_index=True)
        ends = np.append(starts[1:], m)
        bounds = {int(s): (int(a), int(b)) for s, a, b in zip(uniq, starts, ends, strict=True)}
    gens: dict[int, npt.NDArray[np.int64]] = {}
    if rank is not None:
        steps = np.flatnonzero(np.diff(rank)) + 1  # where a shard's next generation (or shard) starts
        for shard, (a, b) in bounds.items():
            inner = steps[np.searchsorted(steps, a, side="right") : np.searchsorted(steps, b, side="left")]
            gens[shard] = np.append(inner - a, b - a)
    return EncodedBatch(
        shard_count=shard_count,
        num_records=m,
        shards=sorted_shards,
        key_hashes=key_hashes,
        offsets=offsets,
        fragments=fragments,
        data=data,
        rows=order,
        key_index=key_index,
        key_values=cols.key_values,
        client_info=client_info,
        send_shard_id=addressed,
        dead=dead,
        shard_bounds=bounds,
        shard_generations=gens,
        data_offsets=_offsets(data) if m else np.zeros(1, np.int64),
        row_base=cols.row_base,
        origin=cols.origin,
        origin_columns=cols.origin_columns,
        generation=shard_map.generation,
        shard_map=shard_map,
        fragment_array=frags,
        not_owned=not_owned,
    )


def _by_generation(
    order: npt.NDArray[np.int64], shards: npt.NDArray[np.int64], key_index: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Re-order shard-sorted records by (shard, rank of the record among its key's records on
    that shard, write order); records without a key are each a generation-0 record of their own.
    Returns (order, shards, rank) in the new order."""
    m = len(order)
    group = shards * (int(key_index.max()) + 2) + (key_index + 1)  # (shard, key); keyless: key 0
    by_group = np.argsort(group, kind="stable")
    grouped = group[by_group]
    starts = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
    sizes = np.diff(np.append(starts, m))
    rank = np.empty(m, np.int64)
    rank[by_group] = np.arange(m) - np.repeat(starts, sizes)
    rank[key_index < 0] = 0
    regen = np.argsort(shards * (m + 1) + rank, kind="stable")
    return order[regen], shards[regen], rank[regen]


def dead_record(cols: MappedColumns, row: int) -> dict[str, Any]:
    """Row ``row`` of a batch as plain record fields, for a dead letter."""
    key = None
    if cols.key_index is not None and cols.key_index[row] >= 0:
        key = cols.key_values[int(cols.key_index[row])]
    ci = None
    if cols.client_info is not None and cols.client_info[row].is_valid:
        ci = cols.client_info[row].as_py()
    shard = int(cols.shard_ids[row]) if cols.shard_ids is not None else None
    return _with_origin(
        {
            "data": cols.data[row].as_py(),
            "partition_key": key,
            "shard_id": shard,
            "client_info": ci,
            "row": cols.row_base + row,
        },
        cols.origin,
        cols.origin_columns,
        row,
    )


def _with_origin(
    record: dict[str, Any], origin: Origin | None, columns: dict[str, pa.Array] | None, row: int
) -> dict[str, Any]:
    """Add ``origin``: the source's origin columns at ``row`` (of these columns), merged with what
    the writer's ``origin(row of the written batch)`` says; nothing when neither is given."""
    where = origin_of(columns, row)
    if origin is not None:
        try:
            where = {**(where or {}), **origin(record["row"])}
        except Exception as exc:  # a source bug must not lose the dead letter itself
            where = {**(where or {}), "error": f"origin unknown: {exc}"}
    if where is not None:
        record["origin"] = where
    return record


def origin_of(origin: dict[str, pa.Array] | None, row: int) -> dict[str, Any] | None:
    """Row ``row`` of the origin columns as plain values (bytes as UTF-8 text, else backslash-escaped)."""
    if not origin:
        return None
    out: dict[str, Any] = {}
    for name, column in origin.items():
        value = column[row].as_py()
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="backslashreplace")
        out[name] = value
    return out
