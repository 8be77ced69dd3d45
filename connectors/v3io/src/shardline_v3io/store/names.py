"""The one place where names and numbers coming from clients are checked.

Every entry point (request paths, ``StreamName``, listing prefixes, ``local://`` paths) splits its
names with :func:`validate_segments`, and every number read from a path, a header or a query
string goes through :func:`parse_decimal`: ASCII digits only (``str.isdigit`` and ``int`` accept
``²`` and the Arabic-Indic ``U+0661``), so a shard id or a byte offset means the same to
every part of the server.
"""

from __future__ import annotations

import re

from shardline_v3io import errors as E
from shardline_v3io.store.errors import StoreError
from shardline_v3io.urls import STORE_MARKER

RESERVED_PREFIX = ".shardline"
"""Names starting with this are the store's own files; clients may not name them."""
MAX_SEGMENT_BYTES = 255
"""The longest path segment, in UTF-8 bytes (a file name on every common file system)."""
MAX_PATH_DEPTH = 64
"""The most segments a path may have, the container included."""
MAX_PATH_BYTES = 1024
"""The longest path, in UTF-8 bytes, the container and the ``/`` between segments included."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_DIGITS = re.compile(r"[0-9]+")
# Characters XML 1.0 cannot carry (listings are XML) and C0/C1 controls (logs, terminals).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def text_problem(text: str) -> str | None:
    """Why ``text`` (a name or a listing marker) cannot be echoed in XML or a log line, or None."""
    if _BAD_CHARS.search(text):
        return "contains a control character, a surrogate, U+FFFE or U+FFFF"
    return None


def segment_problem(seg: str) -> str | None:
    """Why ``seg`` cannot be a path segment (a name of a container, directory, object or stream), or None."""
    if not seg:
        return "empty path segment"
    if seg in (".", ".."):
        return f"the path segment {seg!r} is not allowed"
    if "/" in seg or "\\" in seg:
        return f"the path segment {seg!r} contains a slash or backslash"
    bad_chars = text_problem(seg)
    if bad_chars:
        return f"the path segment {seg!r} {bad_chars}"
    if seg.startswith(RESERVED_PREFIX):
        return f"names starting with {RESERVED_PREFIX!r} are reserved by shardline ({seg!r})"
    if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
        return f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def check_segments(segments: list[str]) -> list[str]:
    """Return ``segments`` (container first) if every one is a valid name and the path is not too deep.

    Raise StoreError (400 InvalidArgumentException) saying what was wrong otherwise.
    """
    if len(segments) > MAX_PATH_DEPTH:
        raise StoreError(E.INVALID_ARGUMENT, f"the path has more than {MAX_PATH_DEPTH} segments")
    total = len(segments) - 1
    for seg in segments:
        problem = segment_problem(seg)
        if problem is not None:
            raise StoreError(E.INVALID_ARGUMENT, problem)
        total += len(seg.encode("utf-8"))
    if total > MAX_PATH_BYTES:
        raise StoreError(E.INVALID_ARGUMENT, f"the path is longer than {MAX_PATH_BYTES} bytes")
    if segments and segments[0] == STORE_MARKER:
        raise StoreError(E.INVALID_ARGUMENT, f"invalid container name {segments[0]!r}")
    return segments


def validate_segments(container: str, path: str) -> list[str]:
    """Split ``container``/``path`` (``/``-separated, empty parts ignored) into checked segments."""
    return check_segments([container, *[s for s in path.split("/") if s]])


def parse_decimal(text: str, max_digits: int = 18, *, canonical: bool = True) -> int | None:
    """The value of ``text`` if it is an ASCII decimal of at most ``max_digits`` digits, else None.

    ``0`` and ``17`` are decimals; ``+1``, `` 1``, ``1_0``, ``-1``, ``²`` and ``U+0661`` never are;
    ``07`` is one only with ``canonical=False`` (shard ids are canonical, byte offsets need not be).
    """
    pattern = _DECIMAL if canonical else _DIGITS
    if len(text) > max_digits or not pattern.fullmatch(text):
        return None
    return int(text)


def is_shard_name(name: str) -> bool:
    """True when ``name`` is written the way shard ids are (canonical ASCII decimal)."""
    return parse_decimal(name, 9) is not None
