"""Binary Arrow arrays as numpy views: offsets, data, ``large_binary`` conversion and base64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pybase64

_LB = pa.large_binary()
_LS = pa.large_string()
_PADS = pa.array([b"", b"\0\0", b"\0"], _LB)  # indexed by len % 3
_EQ = ord("=")


def _predicate(name: str) -> Callable[[pa.DataType], bool]:
    """``pa.types.<name>``, or "never" on a pyarrow older than the type (e.g. views before 16)."""
    fn = getattr(pa.types, name, None)
    return (lambda t: bool(fn(t))) if fn is not None else (lambda t: False)


is_string_view = _predicate("is_string_view")
is_binary_view = _predicate("is_binary_view")
is_list_view = _predicate("is_list_view")
is_large_list_view = _predicate("is_large_list_view")
is_run_end_encoded = _predicate("is_run_end_encoded")


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


def offsets(arr: pa.Array) -> npt.NDArray[np.int64]:
    """The n+1 offsets of a large binary/string array, as int64."""
    buf = arr.buffers()[1]
    if buf is None or len(arr) == 0:
        return np.zeros(len(arr) + 1, dtype=np.int64)
    return np.frombuffer(buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]


def data_view(arr: pa.Array) -> memoryview:
    """The data buffer of a large binary/string array (index it with :func:`offsets`)."""
    buf = arr.buffers()[2]
    return memoryview(buf) if buf is not None else memoryview(b"")


def plain(arr: pa.Array | pa.ChunkedArray, keep_uuid: bool = False) -> pa.Array:
    """One array with its encoding layers removed: chunks combined, run-end encoding decoded and
    extension types (``arrow.json``, ``arrow.bool8``...) as their storage (``arrow.uuid`` kept when
    ``keep_uuid``), views as large_string/large_binary. Dictionaries stay (callers encode their
    values once)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    while True:
        t = arr.type
        if is_run_end_encoded(t):
            arr = pc.run_end_decode(arr)
        elif isinstance(t, pa.BaseExtensionType) and not (keep_uuid and t.extension_name == "arrow.uuid"):
            arr = arr.storage
        elif is_string_view(t) or is_binary_view(t):
            arr = _unview(arr)
        else:
            return arr


def _unview(arr: pa.Array) -> pa.Array:
    """A string/binary view array as large_string/large_binary (pyarrow 16 has no such cast: there
    the values go through Python, once)."""
    target = _LS if is_string_view(arr.type) else _LB
    try:
        return arr.cast(target)
    except pa.ArrowNotImplementedError:
        return pa.array(arr.to_pylist(), target)


def to_large_binary(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A binary-like or string-like array (or a run-end encoded/extension one) as ``large_binary``."""
    arr = plain(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type == _LB:
        return arr
    if pa.types.is_fixed_size_binary(arr.type):
        arr = arr.cast(pa.binary())
    return arr.cast(_LB)


def b64encode_array(arr: pa.Array) -> pa.Array:
    """Base64 of every value of a binary-like array, vectorised (one ``pybase64.b64encode`` call).

    Each value is padded with zero bytes to a multiple of 3, the concatenation is encoded at once,
    and the 'A's that encode the padding become '='. Nulls encode as empty strings.
    """
    arr = to_large_binary(arr)
    if arr.null_count:
        arr = arr.fill_null(b"")
    n = len(arr)
    if n == 0:
        return pa.array([], _LB)
    lens = np.diff(offsets(arr))
    rem = lens % 3
    padded = pc.binary_join_element_wise(arr, _PADS.take(pa.array(rem)), _lb(b""))
    poffs = offsets(padded)
    raw = data_view(padded)[int(poffs[0]) : int(poffs[-1])]
    out = np.frombuffer(bytearray(pybase64.b64encode(raw)), dtype=np.uint8)
    ends = (poffs[1:] - poffs[0]) // 3 * 4
    one = ends[rem == 2]
    out[one - 1] = _EQ
    two = ends[rem == 1]
    out[two - 1] = _EQ
    out[two - 2] = _EQ
    new_offsets = np.concatenate([np.zeros(1, np.int64), ends]).astype(np.int64)
    return pa.Array.from_buffers(_LB, n, [None, pa.py_buffer(new_offsets), pa.py_buffer(out)])
