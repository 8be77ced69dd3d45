"""Arrow arrays -> JSON value texts, column-at-a-time, one encoding per type at any depth.

:func:`json_values` turns an array of any Arrow type into one JSON text per row (a
``large_binary`` array) with Arrow compute kernels and numpy only: no Python object per value, no
pandas. Nested types (structs, lists, maps, unions, dictionaries, run-end encoded) are encoded by
encoding their children the same way and joining the texts, so a value is written the same whether
it is a top-level column, a struct field, a list item or a map value. The README's "json codec"
table lists every type's encoding.

Non-finite floats (NaN, +/-inf) have no JSON form: they become ``null`` and are counted in the
:class:`EncodeStats` of :func:`counting` (the sink's ``metrics.nonfinite_floats``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shardline.arrowbin import (
    b64encode_array,
    data_view,
    is_binary_view,
    is_large_list_view,
    is_list_view,
    is_string_view,
    offsets,
    plain,
    to_large_binary,
)
from shardline.errors import SchemaError

_LB = pa.large_binary()
_LS = pa.large_string()
_EMPTY = pa.scalar(b"", _LB)
_NULL_TEXT = pa.scalar(b"null", _LB)


@dataclass
class EncodeStats:
    """What an encoding had to change: ``nonfinite_floats`` NaN/inf values written as ``null``."""

    nonfinite_floats: int = 0


_STATS: contextvars.ContextVar[EncodeStats | None] = contextvars.ContextVar(
    "shardline_encode_stats", default=None
)


@contextlib.contextmanager
def counting() -> Iterator[EncodeStats]:
    """Count what :func:`json_values` changes inside the block (per thread/task)."""
    stats = EncodeStats()
    token = _STATS.set(stats)
    try:
        yield stats
    finally:
        _STATS.reset(token)


class UnsupportedTypeError(SchemaError):
    """A column holds an Arrow type the codec cannot represent."""


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


def _join(*pieces: pa.Array | pa.Scalar) -> pa.Array:
    """Element-wise concatenation (a null piece makes the row null)."""
    if len(pieces) == 1:
        pieces = (*pieces, _EMPTY)
    return pc.binary_join_element_wise(*pieces, _EMPTY)


def _quote(s: pa.Array) -> pa.Array:
    return _join(_lb(b'"'), s, _lb(b'"'))


def _valid_mask(col: pa.Array) -> npt.NDArray[np.bool_]:
    if col.null_count == 0:
        return np.ones(len(col), dtype=np.bool_)
    return np.asarray(col.is_valid(), dtype=np.bool_)


def _with_nulls(out: pa.Array, col: pa.Array) -> pa.Array:
    """``out`` with ``null`` text where ``col`` is null."""
    if col.null_count:
        out = pc.if_else(col.is_valid(), out, _NULL_TEXT)
    if out.null_count:  # e.g. NaN written as null
        out = out.fill_null(_NULL_TEXT)
    return out


def _value_bytes(arr: pa.Array) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """A large binary/string array's offsets, and the bytes of its values concatenated (null
    slots included): ``offs[0]`` is where the bytes start in the data buffer."""
    offs = offsets(arr)
    return offs, np.frombuffer(data_view(arr), np.uint8)[int(offs[0]) : int(offs[-1])]


def escape_strings(s: pa.Array) -> pa.Array:
    """JSON string literals (quotes included) of a string array; nulls stay null."""
    s = s.cast(_LS)
    # which bytes need escaping, over the buffer at once (3 numpy passes: ~10x faster than
    # match_substring_regex per value, ~0.1 us per key of the sink's writer thread)
    raw = _value_bytes(s)[1]
    control = bool((raw < 0x20).any())
    if not len(s) or not (control or (raw == 0x22).any() or (raw == 0x5C).any()):
        return _quote(s.cast(_LB))  # the common case: nothing to escape
    if control:
        # control characters: rare; orjson escapes them (strings only, no pandas involved)
        return pa.array([None if v is None else orjson.dumps(v) for v in s.to_pylist()], _LB)
    s = pc.replace_substring(s, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    return _quote(s.cast(_LB))


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or is_string_view(t))


def _is_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or is_binary_view(t)
    )


def _is_uuid(t: pa.DataType) -> bool:
    return isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.uuid"


def json_is_string(t: pa.DataType) -> bool:
    """Whether values of type ``t`` are encoded as JSON strings (so they can be object keys)."""
    if pa.types.is_dictionary(t):
        return json_is_string(t.value_type)
    if _is_uuid(t):
        return True
    if isinstance(t, pa.BaseExtensionType):
        return json_is_string(t.storage_type)
    return bool(
        _is_string(t)
        or _is_binary(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
    )


def _has_float(t: pa.DataType) -> bool:
    if pa.types.is_floating(t):
        return True
    if pa.types.is_dictionary(t):
        return _has_float(t.value_type)
    if isinstance(t, pa.BaseExtensionType):
        return _has_float(t.storage_type)
    return any(_has_float(t.field(i).type) for i in range(t.num_fields))


def timestamp_text(col: pa.Array) -> pa.Array:
    """ISO-8601 texts (no quotes) of a timestamp array, ``T`` separated, ``Z`` when it has a time
    zone (the stored instants are UTC, so no time zone database is needed); fraction digits as the
    unit has (none for ``s``, 3 for ``ms``, 6 for ``us``, 9 for ``ns``)."""
    t = col.type
    naive = col.view(pa.timestamp(t.unit)) if t.tz else col
    text = pc.replace_substring(naive.cast(_LS), " ", "T", max_replacements=1).cast(_LB)
    return _join(text, _lb(b"Z")) if t.tz else text


def float_text(col: pa.Array) -> pa.Array:
    """Shortest round-trip texts of a float array that always read back as floats (``3.0``, not
    ``3``; ``1e+20`` keeps its exponent); NaN and +/-inf become null (counted in the current
    :class:`EncodeStats`)."""
    if pa.types.is_float16(col.type):
        col = col.cast(pa.float32())
    finite = pc.is_finite(col)
    bad = len(col) - col.null_count - int(pc.sum(finite).as_py() or 0)
    if bad:
        stats = _STATS.get()
        if stats is not None:
            stats.nonfinite_floats += bad
        col = pc.if_else(finite, col, pa.scalar(None, col.type))
    text = col.cast(_LS).cast(_LB)
    values = np.asarray(col.fill_null(0.5) if col.null_count else col, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.flatnonzero(values == np.trunc(values))  # Arrow prints these without a '.'
    if not len(whole):
        return text
    exponent = np.asarray(pc.match_substring(text.take(pa.array(whole)), "e"), dtype=np.bool_)
    rows = whole[~exponent]
    if not len(rows):
        return text
    return _append_to_rows(text, rows, b".0")


def _append_to_rows(text: pa.Array, rows: npt.NDArray[np.intp], suffix: bytes) -> pa.Array:
    """``text`` (large_binary) with ``suffix`` appended to the values at ``rows`` (sorted), by
    one numpy insert into the data buffer instead of a join over every row."""
    if text.offset:
        text = pa.concat_arrays([text])  # a copy starting at offset 0 (its validity bitmap too)
    offs, data = _value_bytes(text)
    ends = np.repeat(offs[rows + 1] - offs[0], len(suffix))
    out = np.insert(data, ends, np.tile(np.frombuffer(suffix, dtype=np.uint8), len(rows)))
    grow = np.zeros(len(text) + 1, dtype=np.int64)
    np.add.at(grow, rows + 1, len(suffix))
    new_offsets = offs - offs[0] + np.cumsum(grow)
    buffers = [text.buffers()[0], pa.py_buffer(new_offsets), pa.py_buffer(out)]
    return pa.Array.from_buffers(_LB, len(text), buffers, text.null_count)


def _interval_text(col: pa.Array) -> pa.Array:
    raw = np.frombuffer(col.buffers()[1], dtype=[("m", "<i4"), ("d", "<i4"), ("n", "<i8")])
    raw = raw[col.offset : col.offset + len(col)]
    parts = [pa.array(raw[f]).cast(_LS).cast(_LB) for f in ("m", "d", "n")]
    return _join(
        _lb(b'{"months":'), parts[0], _lb(b',"days":'), parts[1], _lb(b',"nanoseconds":'), parts[2], _lb(b"}")
    )


def _uuid_text(col: pa.Array) -> pa.Array:
    storage = col.storage if isinstance(col, pa.ExtensionArray) else col
    if storage.null_count:
        storage = storage.fill_null(b"\0" * 16)
    raw = np.frombuffer(storage.buffers()[1], dtype=np.uint8)[
        storage.offset * 16 : (storage.offset + len(storage)) * 16
    ]
    hexed = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(-1, 32)
    dashed = np.full((len(storage), 38), ord("-"), dtype=np.uint8)
    dashed[:, 0] = dashed[:, 37] = ord('"')
    for src, dst, width in ((0, 1, 8), (8, 10, 4), (12, 15, 4), (16, 20, 4), (20, 25, 12)):
        dashed[:, dst : dst + width] = hexed[:, src : src + width]
    offsets = np.arange(len(storage) + 1, dtype=np.int64) * 38
    return pa.Array.from_buffers(
        _LB, len(storage), [None, pa.py_buffer(offsets), pa.py_buffer(dashed.tobytes())]
    )


def _list_join(texts: pa.Array, lengths: npt.NDArray[np.int64], sep: bytes) -> pa.Array:
    """Per row, the ``lengths[i]`` next texts joined by ``sep`` (``""`` for empty rows)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if len(texts) == 0:
        return pa.array([b""] * len(lengths), _LB)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), texts)
    return pc.binary_join(lists, _lb(sep))


def _list_values(col: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int64]]:
    """The values of the non-null rows of a list-like array, in order, and each row's length
    (0 for nulls): what :func:`_list_join` needs. Handles slices and nulls over non-empty ranges."""
    t = col.type
    n = len(col)
    valid = _valid_mask(col)
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        values = col.values.slice(col.offset * size, n * size)
        lengths = np.full(n, size, dtype=np.int64)
        starts = np.arange(n, dtype=np.int64) * size
    elif is_list_view(t) or is_large_list_view(t):
        values = col.values
        starts = np.asarray(col.offsets, dtype=np.int64)
        lengths = np.asarray(col.sizes, dtype=np.int64).copy()
        lengths[~valid] = 0
        return _gather(values, starts, lengths)
    else:  # list, large_list, map: offsets into the child
        offsets = np.asarray(col.offsets, dtype=np.int64)
        base = int(offsets[0]) if n else 0
        values = col.values.slice(base, int(offsets[-1]) - base if n else 0)
        lengths = np.diff(offsets)
        starts = offsets[:-1] - base
    if col.null_count and lengths[~valid].any():
        lengths = lengths.copy()
        lengths[~valid] = 0
        return _gather(values, starts, lengths)
    if col.null_count:
        lengths = lengths.copy()
        lengths[~valid] = 0
    return values, lengths


def _gather(
    values: pa.Array, starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> tuple[pa.Array, npt.NDArray[np.int64]]:
    total = int(lengths.sum())
    first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    index = first + np.arange(total, dtype=np.int64)
    return values.take(pa.array(index, pa.int64())), lengths


def _struct_text(col: pa.Array, path: str) -> pa.Array:
    t = col.type
    if t.num_fields == 0:
        return _with_nulls(pa.array([b"{}"] * len(col), _LB), col)
    children = col.flatten()  # offset and the struct's nulls applied
    pieces: list[pa.Array | pa.Scalar] = []
    for i, child in enumerate(children):
        name = t.field(i).name
        pieces.append(_lb((b"{" if i == 0 else b",") + orjson.dumps(name) + b":"))
        pieces.append(json_values(child, f"{path}.{name}"))
    pieces.append(_lb(b"}"))
    return _with_nulls(_join(*pieces), col)


def _map_text(col: pa.Array, path: str) -> pa.Array:
    entries, lengths = _list_values(col)
    keys, items = entries.field(0), entries.field(1)
    if entries.offset and len(keys) != len(entries):  # very old pyarrow: field() not sliced
        keys, items = keys.slice(entries.offset, len(entries)), items.slice(entries.offset, len(entries))
    key_text = json_values(keys, f"{path}.key")
    if not json_is_string(keys.type):
        key_text = escape_strings(key_text.cast(_LS))  # 1 -> "1", true -> "true"
    pairs = _join(key_text, _lb(b":"), json_values(items, f"{path}.value"))
    return _with_nulls(_join(_lb(b"{"), _list_join(pairs, lengths, b","), _lb(b"}")), col)


def _union_text(col: pa.Array, path: str) -> pa.Array:
    t = col.type
    n, start = len(col), col.offset
    codes = np.frombuffer(col.buffers()[1], dtype=np.int8)[start : start + n]
    dense = t.mode == "dense"
    if dense:
        positions = np.frombuffer(col.buffers()[2], dtype=np.int32)[start : start + n].astype(np.int64)
    else:
        positions = np.arange(n, dtype=np.int64)
    out_index = np.empty(n, dtype=np.int64)
    parts: list[pa.Array] = []
    done = 0
    for i, code in enumerate(t.type_codes):
        rows = np.flatnonzero(codes == code)
        if not len(rows):
            continue
        child = col.field(i)
        if not dense and len(child) != n:  # a sparse child not yet sliced like its union
            child = child.slice(start, n)
        taken = child.take(pa.array(positions[rows], pa.int64()))
        parts.append(json_values(taken, f"{path}.{t.field(i).name}"))
        out_index[rows] = done + np.arange(len(rows))
        done += len(rows)
    if not parts:
        return pa.array([], _LB)
    return pa.concat_arrays(parts).take(pa.array(out_index, pa.int64()))


def json_values(col: pa.Array | pa.ChunkedArray, path: str = "") -> pa.Array:
    """One JSON value text per row of ``col`` (``null`` for nulls), as a ``large_binary`` array.

    ``path`` names the column in errors (``event.at``). Raises :class:`UnsupportedTypeError` for a
    type with no JSON encoding (the README's table lists those that have one).
    """
    col = plain(col, keep_uuid=True)
    t = col.type
    n = len(col)
    if pa.types.is_null(t):
        return pa.array([b"null"] * n, _LB)
    if pa.types.is_dictionary(t):
        if _has_float(t.value_type):  # count NaN/inf per row, not per dictionary entry
            return json_values(col.dictionary_decode(), path)
        texts = json_values(col.dictionary, path)
        return texts.take(col.indices).fill_null(_NULL_TEXT) if n else pa.array([], _LB)
    if _is_uuid(t):
        out = _uuid_text(col)
    elif pa.types.is_boolean(t):
        out = pc.if_else(col, _lb(b"true"), _lb(b"false"))
    elif pa.types.is_integer(t) or pa.types.is_decimal(t):
        out = col.cast(_LS).cast(_LB)
    elif pa.types.is_floating(t):
        out = float_text(col)
    elif _is_string(t):
        out = escape_strings(col)
    elif _is_binary(t):
        out = _quote(b64encode_array(col))
    elif pa.types.is_timestamp(t):
        out = _quote(timestamp_text(col))
    elif pa.types.is_date(t) or pa.types.is_time(t):
        out = _quote(col.cast(_LS).cast(_LB))
    elif pa.types.is_duration(t):
        out = col.cast(pa.int64()).cast(_LS).cast(_LB)
    elif t == pa.month_day_nano_interval():
        out = _interval_text(col)
    elif pa.types.is_struct(t):
        return _struct_text(col, path)
    elif pa.types.is_map(t):
        return _map_text(col, path)
    elif (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or is_list_view(t)
        or is_large_list_view(t)
    ):
        values, lengths = _list_values(col)
        items = json_values(values, f"{path}[]")
        out = _join(_lb(b"["), _list_join(items, lengths, b","), _lb(b"]"))
    elif pa.types.is_union(t):
        return _union_text(col, path)
    else:
        raise UnsupportedTypeError(
            f"column {path!r} has type {t}, which the json codec cannot encode; cast it (e.g. to string) "
            "or leave it out with columns=[...]"
        )
    return _with_nulls(out, col)


def text_values(col: pa.Array, path: str = "") -> pa.Array:
    """Plain texts for the ``template`` codec: strings as they are, binary as its bytes, timestamps,
    dates and times as their ISO text, everything else as its JSON text; nulls are null."""
    col = plain(col, keep_uuid=True)
    t = col.type
    if pa.types.is_dictionary(t):
        return text_values(col.dictionary_decode(), path)
    if _is_string(t) or _is_binary(t):
        return to_large_binary(col)
    if pa.types.is_timestamp(t):
        return timestamp_text(col)
    if pa.types.is_date(t) or pa.types.is_time(t):
        return col.cast(_LS).cast(_LB)
    out = json_values(col, path)
    if json_is_string(t):  # uuid
        out = pc.binary_slice(out, 1, -1)  # without its quotes
    return pc.if_else(col.is_valid(), out, pa.scalar(None, _LB)) if col.null_count else out
