"""The embedded v3io-compatible stream server (``shardline serve``).

An aiohttp low-level server (no router: the raw request path is parsed and checked here, because
v3io clients send ``//container/...`` and aiohttp does not normalise ``//`` or ``..``). It speaks:

* the Streaming Web API (``X-v3io-function``): CreateStream, DescribeStream, UpdateStream,
  PutRecords, SeekShard/Seek, GetRecords (and DeleteStream as a convenience);
* simple objects: ``PUT`` a body to a path (``Range: -1`` appends), ``PUT`` a path ending in ``/``
  (a directory), ``GET`` (with ``Range``), ``HEAD``, ``DELETE``;
* container listing ``GET /<container>?prefix=...`` as an S3-like ``ListBucketResult``.

KV functions (PutItem, GetItem, ...) are answered with a 400 error body, except ``GetItems`` on a
directory, which lists object names (``__name``) so that tools that delete a folder item by item work.

Every handler is wrapped: a bad request gets a v3io error body, never a crashed server.

Fault injection (:mod:`shardline_v3io.faults`): whole-request status faults before the body is
read, per-record faults in the store's write, and, for a written PutRecords, a connection reset or
a delayed answer, applied after the request's body slot is released.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hmac
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

import orjson
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import PayloadEncodingError
from aiohttp.web_request import BaseRequest
from shardline import ConfigError

from shardline_v3io import errors as E
from shardline_v3io.faults import FaultConfig
from shardline_v3io.guard import ClientGuard, GuardedServer, GuardOptions
from shardline_v3io.store import StoreError, StreamStore, names
from shardline_v3io.store.stream import MAX_GET_LIMIT, MAX_RECORDS
from shardline_v3io.wire import MAX_REQUEST_BODY_BYTES

MAX_BODY = MAX_REQUEST_BODY_BYTES
"""The largest JSON body a Streaming Web API request may have (10 MiB, :mod:`shardline_v3io.wire`)."""
MAX_CONCURRENT_BODIES = 32
"""Stream requests processed at once, once their body is in (each may hold a 10 MB body)."""
_DISCARD_LIMIT = 64 * 2**20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OS_ERRORS: dict[int, E.V3ioError] = {
    errno.ENOENT: E.NO_SUCH_FILE,
    errno.ENOTDIR: E.NO_SUCH_FILE,
    errno.EISDIR: E.RESOURCE_EXISTS,
    errno.EEXIST: E.RESOURCE_EXISTS,
    errno.ENOTEMPTY: E.DIRECTORY_NOT_EMPTY,
    errno.ENAMETOOLONG: E.INVALID_ARGUMENT,
    errno.ELOOP: E.INVALID_ARGUMENT,
    errno.EACCES: E.PERMISSION_DENIED,
    errno.EPERM: E.PERMISSION_DENIED,
}
"""File-system errors a request can provoke, as the v3io errors they are answered with."""
_JSON = "application/json"

STREAM_FUNCTIONS = frozenset(
    {
        "CreateStream",
        "DescribeStream",
        "UpdateStream",
        "PutRecords",
        "SeekShard",
        "Seek",
        "GetRecords",
        "DeleteStream",
    }
)
KV_FUNCTIONS = frozenset(
    {
        "PutItem",
        "PutItems",
        "GetItem",
        "GetItems",
        "UpdateItem",
        "DeleteItem",
        "CreateSchema",
        "GetItemsStream",
    }
)
FAULTABLE = frozenset({"PutRecords", "GetRecords", "SeekShard", "Seek", "DescribeStream"})


@dataclass
class ServerOptions:
    """How ``shardline serve`` runs."""

    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8081
    access_key: str | None = None
    """Required key; None = an open server. An empty string is refused (ConfigError)."""
    fault: FaultConfig = field(default_factory=FaultConfig)
    guard: GuardOptions = field(default_factory=GuardOptions)
    fsync: bool = False
    retention_interval_s: float = 60.0
    metrics_port: int | None = None
    """Serve Prometheus ``/metrics`` on this port (0: a free port); None: no metrics."""
    metrics_host: str = "127.0.0.1"


class ClientGone(Exception):
    """The client closed its connection before its request was in."""


class RequestError(Exception):
    """A whole request fails with ``kind`` (a v3io error) and a detail for humans."""

    def __init__(self, kind: E.V3ioError, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class ParsedPath:
    """A checked request path: container, segments after it, trailing slash, raw query."""

    container: str
    segments: list[str]
    trailing_slash: bool
    query: str

    @property
    def path(self) -> str:
        """The path inside the container, without leading or trailing slash."""
        return "/".join(self.segments)


def parse_raw_path(raw: str) -> ParsedPath | None:
    """Check and split a raw request target; None for ``/`` (no container). Raise RequestError when unsafe.

    Segments are percent-decoded (strict UTF-8) and checked by :func:`names.check_segments`, the
    one name check every entry point uses (depth, length, reserved and XML-invalid characters).
    """
    if raw.startswith(("http://", "https://")):
        rest = raw.split("://", 1)[1]
        slash = rest.find("/")
        raw = rest[slash:] if slash >= 0 else "/"
    path_part, _, query = raw.partition("?")
    path_part = path_part.partition("#")[0]
    if "\\" in path_part or "\x00" in path_part:
        raise RequestError(E.INVALID_ARGUMENT, "the path must not contain backslashes or NUL bytes")
    segments: list[str] = []
    for seg in path_part.split("/"):
        if not seg:
            continue
        if len(segments) >= names.MAX_PATH_DEPTH:
            raise RequestError(E.INVALID_ARGUMENT, f"the path has more than {names.MAX_PATH_DEPTH} segments")
        try:
            dec = unquote(seg, errors="strict")
        except UnicodeDecodeError as exc:
            raise RequestError(E.INVALID_ARGUMENT, "the path is not valid percent-encoded UTF-8") from exc
        segments.append(dec)
    if not segments:
        return None
    try:
        names.check_segments(segments)
    except StoreError as exc:
        raise RequestError(exc.kind, exc.detail) from None
    return ParsedPath(segments[0], segments[1:], path_part.endswith("/"), query)


def _reset_connection(request: BaseRequest) -> None:
    """Drop the request's connection at once with a TCP RST (SO_LINGER 0), answering nothing."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type=_JSON)


def _error_response(kind: E.V3ioError, detail: str | None = None) -> web.Response:
    return web.Response(body=kind.body(detail), status=kind.status, content_type=_JSON)


def _get_int(doc: dict[str, Any], name: str, *, required: bool, minimum: int | None = None) -> int | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise RequestError(E.INVALID_ARGUMENT, f"{name} is required")
        return None
    if type(value) is not int:
        raise RequestError(E.INVALID_ARGUMENT, f"{name} must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise RequestError(E.INVALID_ARGUMENT, f"{name} must be >= {minimum}, got {value}")
    return value


def _http_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class V3ioServer:
    """The request handler: one instance per running server, over one :class:`StreamStore`."""

    def __init__(
        self,
        store: StreamStore,
        *,
        access_key: str | None = None,
        fault: FaultConfig | None = None,
        guard: ClientGuard | None = None,
    ) -> None:
        if access_key is not None and not access_key:
            raise ConfigError("the access key is empty; give a non-empty key, or none for an open server")
        self.store = store
        self._key = access_key.encode("utf-8") if access_key else None
        self.fault = fault or FaultConfig()
        self.guard = guard or ClientGuard(GuardOptions())
        self._body_slots = asyncio.Semaphore(MAX_CONCURRENT_BODIES)
        self.metrics: Any = None  # a ServerMetrics with --metrics-port
        self.metrics_url: str | None = None

    # -- entry -------------------------------------------------------------------------------------

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        """Answer one request; never raises, and no error body names a file-system path."""
        try:
            return await self._handle(request)
        except RequestError as exc:
            return self._error(exc.kind, exc.detail)
        except StoreError as exc:
            return self._error(exc.kind, exc.detail)
        except (ClientGone, ConnectionResetError, ClientPayloadError, PayloadEncodingError) as exc:
            # the client went away (or broke its body) mid-request: one line, no traceback
            if not self.guard.closed_by_guard(request):  # else we closed it: nothing to report
                line = f"client {request.remote} gone mid-request ({type(exc).__name__})"
                print(line, file=sys.stderr, flush=True)
            return self._error(E.INVALID_ARGUMENT, "the request body ended early")
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # a file-system answer to a path the client chose: its errno, no path
            kind = _OS_ERRORS.get(exc.errno or 0)
            if kind is None:
                traceback.print_exc(file=sys.stderr)
                return _error_response(E.INTERNAL_ERROR, f"{type(exc).__name__} (see the server log)")
            return _error_response(kind, exc.strerror or kind.name)
        except Exception as exc:  # never crash on input; the details go to the log only
            traceback.print_exc(file=sys.stderr)
            return _error_response(E.INTERNAL_ERROR, f"{type(exc).__name__} (see the server log)")
        finally:
            self.guard.request_answered(request)

    def _error(self, kind: E.V3ioError, detail: str) -> web.Response:
        """An error response whose detail never shows the data directory's absolute path."""
        root = str(self.store.root)
        if root in detail:
            detail = detail.replace(root + os.sep, "").replace(root, "<data-dir>")
        return _error_response(kind, detail)

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        self.guard.headers_received(request)
        if not request.body_exists:
            self.guard.request_received(request)
        if self._key is not None and not self._authorised(request):
            return _error_response(
                E.PERMISSION_DENIED,
                "a valid access key is required (X-v3io-session-key header or HTTP Basic password)",
            )
        parsed = parse_raw_path(request.raw_path)
        function = request.headers.get("X-v3io-function")
        if function:
            response = await self._function(request, function, parsed)
            if function == "PutRecords" and response.status == 200:
                return await self._answer_faults(request, response)  # after the body slot is freed
            return response
        return await self._plain(request, parsed)

    async def _answer_faults(self, request: BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
        """Apply ``--fault-reset-rate`` and ``--fault-latency`` to a written PutRecords' answer.

        A reset closes the connection with a TCP RST and no HTTP answer (the returned response
        cannot be sent; aiohttp drops it quietly). A delay awaits, so other requests go on.
        """
        if self.fault.reset_request():
            _reset_connection(request)
            return response
        delay = self.fault.answer_delay_s()
        if delay > 0.0:
            await asyncio.sleep(delay)
        return response

    def _authorised(self, request: BaseRequest) -> bool:
        assert self._key is not None
        key = request.headers.get("X-v3io-session-key")
        if key is not None and hmac.compare_digest(key.encode("utf-8", "surrogateescape"), self._key):
            return True
        auth = request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            _user, sep, password = decoded.partition(b":")
            return bool(sep) and hmac.compare_digest(password, self._key)
        return False

    async def _read_body(self, request: BaseRequest, limit: int = MAX_BODY) -> bytes:
        """The whole body (at most ``limit`` bytes), read within the body timeout.

        Bodies in reception are counted (as they arrive) against the server's byte budget: over it,
        503 at once rather than a wait. Raise RequestError (400 too large, 408 too slow, 503).
        """
        length = request.content_length
        if length is not None and length > limit:
            if length <= _DISCARD_LIMIT:
                await self._discard(request)
            raise RequestError(E.INVALID_ARGUMENT, f"the request body is larger than {limit} bytes")
        if length == 0:
            self.guard.request_received(request)
            return b""
        chunks: list[bytes] = []
        total = 0
        try:
            async with self.guard.body_deadline():
                while True:
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    if total + len(chunk) > limit:
                        await self._discard(request)
                        raise RequestError(
                            E.INVALID_ARGUMENT, f"the request body is larger than {limit} bytes"
                        )
                    if not self.guard.take_bytes(len(chunk)):
                        raise RequestError(
                            E.SERVICE_UNAVAILABLE, "the server is receiving too many request bodies; retry"
                        )
                    total += len(chunk)
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(
                E.REQUEST_TIMEOUT,
                f"the request body did not arrive within {self.guard.options.body_timeout_s:g} s",
            ) from None
        finally:
            self.guard.give_bytes(total)
        if length is not None and total < length:
            raise ClientGone("the request body ended early")
        self.guard.request_received(request)
        return b"".join(chunks)

    async def _discard(self, request: BaseRequest) -> None:
        """Read and drop the body (at most 64 MiB, within the body timeout): the connection stays usable."""
        total = 0
        with contextlib.suppress(TimeoutError):
            async with self.guard.body_deadline():
                async for chunk in request.content.iter_any():
                    total += len(chunk)
                    if total > _DISCARD_LIMIT:
                        break

    async def _json_body(self, request: BaseRequest) -> dict[str, Any]:
        body = await self._read_body(request)
        if not body.strip():
            return {}
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(E.INVALID_ARGUMENT, f"malformed JSON body: {exc}") from exc
        if not isinstance(doc, dict):
            raise RequestError(E.INVALID_ARGUMENT, "the JSON body must be an object")
        return doc

    # -- Streaming Web API -------------------------------------------------------------------------

    async def _function(
        self, request: BaseRequest, function: str, parsed: ParsedPath | None
    ) -> web.StreamResponse:
        if function in KV_FUNCTIONS:
            if function == "GetItems" and parsed is not None:
                return await self._get_items(request, parsed)
            await self._discard(request)
            raise RequestError(
                E.UNSUPPORTED_FUNCTION,
                f"{function}: the KV API is not supported by shardline serve "
                "(streams and simple objects only)",
            )
        if function not in STREAM_FUNCTIONS:
            await self._discard(request)
            raise RequestError(E.UNSUPPORTED_FUNCTION, f"unknown X-v3io-function {function!r}")
        if request.method not in ("POST", "PUT"):
            await self._discard(request)
            raise RequestError(E.INVALID_ARGUMENT, f"{function} must be sent with POST or PUT")
        if parsed is None:
            await self._discard(request)
            raise RequestError(E.INVALID_ARGUMENT, "the path must name a container and a stream")
        if function in FAULTABLE and self.fault.fail_request():
            await self._discard(request)
            kind = E.error_for_status(self.fault.status)
            return _error_response(kind, "injected fault (--fault-status)")
        doc = await self._json_body(request)
        async with self._body_slots:  # bodies are in: bounds the requests processed at once
            return self._stream_call(function, parsed, doc)

    def _stream_call(self, function: str, parsed: ParsedPath, doc: dict[str, Any]) -> web.StreamResponse:
        container = parsed.container
        if function in ("SeekShard", "Seek", "GetRecords"):
            shard_id = names.parse_decimal(parsed.segments[-1], 9) if parsed.segments else None
            if shard_id is None:
                raise RequestError(
                    E.INVALID_ARGUMENT,
                    f"{function} needs a path /<container>/<stream>/<shard-id>/ (shard id in ASCII digits)",
                )
            stream = self.store.open_stream(container, "/".join(parsed.segments[:-1]))
            if shard_id >= stream.shard_count:
                raise RequestError(
                    E.SHARD_OUT_OF_RANGE,
                    f"shard {shard_id} does not exist; the stream has {stream.shard_count} shards",
                )
            if function == "GetRecords":
                return self._get_records(stream, shard_id, doc)
            return self._seek(stream, shard_id, doc)
        path = self._stream_path(parsed, doc)
        if function == "PutRecords":
            return self._put_records(container, path, doc)
        if function == "CreateStream":
            shards = _get_int(doc, "ShardCount", required=True, minimum=1)
            retention = _get_int(doc, "RetentionPeriodHours", required=False, minimum=1) or 24
            assert shards is not None
            if not self.store.create_stream(container, path, shards, retention):
                return _error_response(E.RESOURCE_EXISTS, f"stream {container}/{path} already exists")
            return web.Response(status=204)
        if function == "DescribeStream":
            meta = self.store.describe_stream(container, path)
            return _json_response(
                {"ShardCount": meta.shard_count, "RetentionPeriodHours": meta.retention_hours}
            )
        if function == "UpdateStream":
            shards = _get_int(doc, "ShardCount", required=True, minimum=1)
            assert shards is not None
            self.store.update_stream(container, path, shards)
            return web.Response(status=204)
        # DeleteStream
        if not self.store.delete_stream(container, path):
            raise StoreError(E.RESOURCE_NOT_FOUND, f"stream {container}/{path} does not exist")
        return web.Response(status=204)

    def _stream_path(self, parsed: ParsedPath, doc: dict[str, Any]) -> str:
        name = doc.get("StreamName")
        if name is None:
            if not parsed.segments:
                raise RequestError(E.INVALID_ARGUMENT, "name the stream in the path or in StreamName")
            return parsed.path
        if type(name) is not str or not name.strip("/"):
            raise RequestError(E.INVALID_ARGUMENT, "StreamName must be a non-empty string")
        if "?" in name or "#" in name:
            raise RequestError(E.INVALID_ARGUMENT, "StreamName must be a stream path, without '?' or '#'")
        extra = "/".join(names.validate_segments(parsed.container, name)[1:])
        if parsed.segments:
            try:
                self.store.open_stream(parsed.container, parsed.path)
                return parsed.path
            except StoreError:
                joined = parsed.path + "/" + extra
                names.validate_segments(parsed.container, joined)
                return joined
        return extra

    def _put_records(self, container: str, path: str, doc: dict[str, Any]) -> web.Response:
        records = doc.get("Records")
        if type(records) is not list:
            raise RequestError(E.INVALID_ARGUMENT, "Records must be an array of records")
        n = len(records)
        if n == 0:
            raise RequestError(E.INVALID_ARGUMENT, "Records is empty")
        if n > MAX_RECORDS:
            raise RequestError(E.INVALID_ARGUMENT, f"at most {MAX_RECORDS} records per request, got {n}")
        stream = self.store.open_stream(container, path)
        return web.Response(body=stream.put_records_response(records, self.fault), content_type=_JSON)

    def _seek(self, stream: Any, shard_id: int, doc: dict[str, Any]) -> web.Response:
        seek_type = doc.get("Type")
        if type(seek_type) is not str:
            raise RequestError(E.INVALID_ARGUMENT, "Type must be one of EARLIEST, LATEST, SEQUENCE, TIME")
        seek_type = seek_type.upper()
        if seek_type == "SEQUENCE":
            seq = _get_int(doc, "StartingSequenceNumber", required=True, minimum=0)
            location = stream.seek(shard_id, "SEQUENCE", sequence_number=seq)
        elif seek_type == "TIME":
            sec = _get_int(doc, "TimestampSec", required=True, minimum=0)
            nsec = _get_int(doc, "TimestampNSec", required=False, minimum=0) or 0
            assert sec is not None
            location = stream.seek(shard_id, "TIME", timestamp_ns=sec * 1_000_000_000 + nsec)
        elif seek_type in ("EARLIEST", "LATEST"):
            location = stream.seek(shard_id, seek_type)
        else:
            raise RequestError(
                E.INVALID_ARGUMENT, f"Type must be one of EARLIEST, LATEST, SEQUENCE, TIME, got {seek_type!r}"
            )
        return _json_response({"Location": location})

    def _get_records(self, stream: Any, shard_id: int, doc: dict[str, Any]) -> web.Response:
        limit = _get_int(doc, "Limit", required=False, minimum=1) or 1000
        location = doc.get("Location")
        if location is None:
            raise RequestError(E.INVALID_ARGUMENT, "Location is required (get one with Seek)")
        return _json_response(stream.get_records_doc(shard_id, location, min(limit, MAX_GET_LIMIT)))

    async def _get_items(self, request: BaseRequest, parsed: ParsedPath) -> web.Response:
        doc = await self._json_body(request)
        marker = doc.get("Marker") or ""
        if type(marker) is not str:
            raise RequestError(E.INVALID_ARGUMENT, "Marker must be a string")
        try:
            listing = self.store.list(parsed.container, parsed.path + "/", max_keys=1000, marker=marker)
        except StoreError as exc:
            if exc.kind is E.NO_SUCH_FILE:
                raise StoreError(E.RESOURCE_NOT_FOUND, exc.detail) from exc
            raise
        items = [{"__name": {"S": e.key.rstrip("/").rsplit("/", 1)[-1]}} for e in listing.entries]
        out: dict[str, Any] = {"Items": items, "LastItemIncluded": "FALSE" if listing.truncated else "TRUE"}
        if listing.truncated:
            out["NextMarker"] = listing.next_marker
        return _json_response(out)

    # -- objects and listing ---------------------------------------------------------------------

    async def _plain(self, request: BaseRequest, parsed: ParsedPath | None) -> web.StreamResponse:
        method = request.method
        if parsed is None:
            if method in ("GET", "HEAD"):
                return self._list_containers()
            raise RequestError(E.INVALID_ARGUMENT, "the path must name a container")
        if not parsed.segments:
            if method in ("GET", "HEAD"):
                return self._list(parsed)
            await self._discard(request)
            raise RequestError(E.INVALID_ARGUMENT, f"{method} on a container is not supported")
        if method in ("GET", "HEAD"):
            return await self._get_object(request, parsed)
        if method == "PUT":
            return await self._put_object(request, parsed)
        if method == "DELETE":
            if not self.store.delete(parsed.container, parsed.path):
                raise StoreError(
                    E.NO_SUCH_FILE, f"No such file or directory: {parsed.container}/{parsed.path}"
                )
            return web.Response(status=204)
        await self._discard(request)
        raise RequestError(E.METHOD_NOT_ALLOWED, f"{method} is not supported without X-v3io-function")

    def _list_containers(self) -> web.Response:
        names_ = sorted(
            p.name
            for p in self.store.root.iterdir()
            if not p.is_symlink() and p.is_dir() and names.segment_problem(p.name) is None
        )
        now = _http_date(time.time())
        buckets = "".join(
            f"<Bucket><Name>{escape(n)}</Name><CreationDate>{now}</CreationDate><Id>{i + 1}</Id></Bucket>"
            for i, n in enumerate(names_)
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult>'
            f"<Owner><ID>shardline</ID><DisplayName>shardline</DisplayName></Owner><Buckets>{buckets}</Buckets>"
            "</ListAllMyBucketsResult>"
        )
        return web.Response(text=xml, content_type="application/xml")

    def _list(self, parsed: ParsedPath) -> web.Response:
        query = parse_qs(parsed.query, keep_blank_values=True)
        prefix = query.get("prefix", [""])[0]
        dirs_only = query.get("prefix-only", ["0"])[0] not in ("", "0", "false")
        marker = query.get("marker", [""])[0]
        if names.text_problem(marker):
            raise RequestError(E.INVALID_ARGUMENT, f"marker: {names.text_problem(marker)}")
        max_keys_raw = query.get("max-keys", ["1000"])[0]
        max_keys_or_none = names.parse_decimal(max_keys_raw, 9, canonical=False)
        if max_keys_or_none is None:
            raise RequestError(E.INVALID_ARGUMENT, f"max-keys must be an integer, got {max_keys_raw!r}")
        max_keys = max_keys_or_none
        if max_keys < 1:
            raise RequestError(E.INVALID_ARGUMENT, "max-keys must be >= 1")
        if "\x00" in prefix or "\\" in prefix:
            raise RequestError(E.INVALID_ARGUMENT, "the prefix must not contain backslashes or NUL bytes")
        listing = self.store.list(
            parsed.container, prefix, dirs_only=dirs_only, max_keys=max_keys, marker=marker
        )
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>',
            f"<Name>{escape(parsed.container)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<Marker>{escape(marker)}</Marker><NextMarker>{escape(listing.next_marker)}</NextMarker>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>",
        ]
        for e in listing.entries:
            when = _http_date(e.mtime)
            if e.is_dir:
                parts.append(
                    f"<CommonPrefixes><Prefix>{escape(e.key)}</Prefix><LastModified>{when}</LastModified>"
                    f"</CommonPrefixes>"
                )
            else:
                parts.append(
                    f"<Contents><Key>{escape(e.key)}</Key><Size>{e.size}</Size>"
                    f"<LastModified>{when}</LastModified></Contents>"
                )
        parts.append("</ListBucketResult>")
        return web.Response(text="".join(parts), content_type="application/xml")

    async def _get_object(self, request: BaseRequest, parsed: ParsedPath) -> web.StreamResponse:
        p = self.store.object_path(parsed.container, parsed.path)
        if p.is_dir():
            if request.method == "HEAD":
                return web.Response(status=200, headers={"Content-Length": "0"})
            raise RequestError(E.INVALID_ARGUMENT, f"{parsed.container}/{parsed.path} is a directory")
        if not p.is_file():
            raise StoreError(E.NO_SUCH_FILE, f"No such file or directory: {parsed.container}/{parsed.path}")
        return await _send_file(request, p, self.guard.options.body_timeout_s)

    async def _put_object(self, request: BaseRequest, parsed: ParsedPath) -> web.Response:
        if parsed.trailing_slash:
            await self._discard(request)
            self.store.make_directory(parsed.container, parsed.path)
            return web.Response(status=200)
        target = self.store.prepare_object_write(parsed.container, parsed.path)
        append = request.headers.get("Range", "").strip() == "-1"
        if append:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NOFOLLOW, 0o644)
            tmp = None
        else:
            tmp = target.with_name(f".shardline-upload-{os.getpid()}-{id(request)}-{target.name}"[:250])
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o644)
        pause = self.guard.options.body_timeout_s
        written = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(pause):  # an upload may be long, but not stall
                        chunk = await request.content.readany()
                except TimeoutError:
                    raise RequestError(E.REQUEST_TIMEOUT, f"the upload stalled for {pause:g} s") from None
                if not chunk:
                    break
                written += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if request.content_length is not None and written < request.content_length:
                raise ClientGone("the upload ended early")
        except BaseException:
            os.close(fd)
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        self.guard.request_received(request)
        if tmp is not None:
            os.replace(tmp, target)
        return web.Response(status=200)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a ``Range`` header (v3io style ``bytes=4`` too); None = whole object.

    Raise RequestError (416) when it cannot be satisfied.
    """
    header = header.strip()
    if not header:
        return None
    if not header.startswith("bytes="):
        raise RequestError(E.RANGE_NOT_SATISFIABLE, f"unsupported Range {header!r}")
    spec = header[6:].strip()
    if "," in spec:
        raise RequestError(E.RANGE_NOT_SATISFIABLE, "multiple ranges are not supported")
    first, _dash, last = spec.partition("-")  # v3io style "bytes=4" (no dash) = from 4 on
    first, last = first.strip(), last.strip()
    if not first:  # suffix: the last N bytes (N >= 1)
        n = names.parse_decimal(last, canonical=False)
        if n is None or n == 0:
            raise RequestError(E.RANGE_NOT_SATISFIABLE, f"malformed Range {header!r}")
        return max(0, size - n), size
    start_or_none = names.parse_decimal(first, canonical=False)
    last_or_none = names.parse_decimal(last, canonical=False) if last else size - 1
    if start_or_none is None or last_or_none is None:
        raise RequestError(E.RANGE_NOT_SATISFIABLE, f"malformed Range {header!r}")
    start, end = start_or_none, last_or_none + 1
    if start < 0 or start > size or (end <= start and not (start == size == end)):
        raise RequestError(E.RANGE_NOT_SATISFIABLE, f"Range {header!r} outside an object of {size} bytes")
    return start, min(end, size)


async def _send_file(
    request: BaseRequest, path: Path, write_timeout_s: float, chunk: int = 256 * 1024
) -> web.StreamResponse:
    """Stream a file (or a byte range of it) without reading it all into memory.

    A client that stops reading for ``write_timeout_s`` is dropped (TimeoutError).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | _NOFOLLOW)
    except OSError as exc:  # a link put there since the path was checked, or a vanished file
        raise StoreError(E.NO_SUCH_FILE, "No such file or directory") from exc
    try:
        size = os.fstat(fd).st_size
        rng = parse_range(request.headers.get("Range", ""), size)
        start, end = rng if rng is not None else (0, size)
        resp = web.StreamResponse(status=206 if rng is not None else 200)
        resp.content_type = "application/octet-stream"
        resp.content_length = end - start
        resp.headers["Accept-Ranges"] = "bytes"
        if rng is not None:
            resp.headers["Content-Range"] = f"bytes {start}-{max(start, end - 1)}/{size}"
        await resp.prepare(request)
        if request.method != "HEAD":
            pos = start
            while pos < end:
                data = os.pread(fd, min(chunk, end - pos), pos)
                if not data:
                    break
                try:
                    async with asyncio.timeout(write_timeout_s):
                        await resp.write(data)
                except TimeoutError:
                    if request.transport is not None:
                        request.transport.abort()
                    raise ClientGone("the client stopped reading") from None
                pos += len(data)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


async def start(options: ServerOptions) -> tuple[web.ServerRunner, str, V3ioServer]:
    """Start the server; return the runner (``await runner.cleanup()`` stops it), its URL and handler.

    With ``options.metrics_port`` the handler's ``metrics`` (a
    :class:`~shardline_v3io.server_metrics.ServerMetrics`) serves ``/metrics``; its ``metrics_url``
    says where (``handler.metrics.close()`` stops it).
    """
    store = StreamStore(options.data_dir, fsync=options.fsync, clock=_clock_from_env())
    try:
        handler = V3ioServer(
            store, access_key=options.access_key, fault=options.fault, guard=ClientGuard(options.guard)
        )
    except BaseException:
        store.close()
        raise
    handle = handler.handle
    if options.metrics_port is not None:
        from shardline_v3io.server_metrics import ServerMetrics

        handler.metrics = ServerMetrics(store, STREAM_FUNCTIONS | KV_FUNCTIONS)
        handle = handler.metrics.observe(handle)
        try:
            handler.metrics_url = handler.metrics.serve(options.metrics_host, options.metrics_port)
        except BaseException:
            store.close()
            raise
    server = GuardedServer(handle, guard=handler.guard, handler_cancellation=False)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, backlog=1024, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else options.port
    host = options.host if ":" not in options.host else f"[{options.host}]"
    return runner, f"http://{host}:{port}", handler


def _clock_from_env() -> Callable[[], int]:
    """The store's clock; env ``SHARDLINE_CLOCK_OFFSET_S`` shifts it (for retention tests)."""
    offset = os.environ.get("SHARDLINE_CLOCK_OFFSET_S")
    if not offset:
        return time.time_ns
    shift = int(float(offset) * 1e9)
    return lambda: time.time_ns() + shift


async def _retention_loop(store: StreamStore, interval: float) -> None:
    while True:
        try:
            store.apply_retention()
        except Exception:
            traceback.print_exc(file=sys.stderr)
        await asyncio.sleep(interval)


async def serve_forever(
    options: ServerOptions, on_ready: Callable[[str], Awaitable[None] | None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly (in-flight requests finish, files are closed)."""
    runner, url, handler = await start(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    for container, path in handler.store.iter_stream_dirs():
        with contextlib.suppress(StoreError):
            handler.store.open_stream(container, path)
    sweeper = asyncio.create_task(_retention_loop(handler.store, options.retention_interval_s))
    if handler.metrics_url is not None:
        print(f"metrics on {handler.metrics_url}", flush=True)
    print(f"listening on {url}", flush=True)
    if on_ready is not None:
        result = on_ready(url)
        if result is not None:
            await result
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        await runner.cleanup()
        if handler.metrics is not None:
            handler.metrics.close()
        handler.store.close()


def _raise_open_file_limit() -> None:
    """Each open shard holds two descriptors: lift the soft limit to the hard one (Linux, macOS)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass


def run(options: ServerOptions) -> None:
    """Blocking entry point of ``shardline serve``."""
    Path(options.data_dir).mkdir(parents=True, exist_ok=True)
    _raise_open_file_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve_forever(options))
