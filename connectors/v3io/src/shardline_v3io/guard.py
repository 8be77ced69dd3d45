"""What keeps slow or hostile clients from starving good ones: time limits and a per-client cap.

* **Header time**: a connection must send a request's headers within ``header_timeout_s`` of
  connecting, or of the first byte of its next request; a connection idle between requests is
  closed after ``header_timeout_s`` too (aiohttp's keep-alive timer).
* **Body time**: the server reads a request body within ``body_timeout_s``
  (:meth:`ClientGuard.body_deadline`).
* **Pending connections per client address**: a connection is *pending* from its connection (or
  the first byte of its next request) until that request is fully received (headers and body).
  A client address may hold at most ``max_pending_per_client`` pending connections: a new one
  closes the oldest pending one of its address (the one stalled longest), so a flood of stalled
  connections cannot keep a good request of the same address out.
  Connections that are idle between requests or whose request is being answered do not count, so a
  client with a large pool of keep-alive connections is not refused.
* **Bytes in reception**: at most ``max_receiving_bytes`` of request bodies are held while they
  arrive (counted as they arrive, not as declared); beyond that a request gets a 503 at once.

Stream requests take one of the server's processing slots only once their body is in, so clients
that stall in the middle of a body hold no slot.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shardline_v3io import errors as E

DEFAULT_HEADER_TIMEOUT_S = 60.0
"""Seconds a connection has to send its request headers (also the idle keep-alive time, which is
longer than the 30 s our own client keeps idle connections, so the server is not the one to close)."""
DEFAULT_BODY_TIMEOUT_S = 60.0
"""Seconds a stream request's body (at most 10 MiB) has to arrive, and an object upload's longest pause."""
DEFAULT_MAX_PENDING_PER_CLIENT = 128
"""Connections per client address that may be sending a request at once (``--max-pending-per-client``)."""
DEFAULT_MAX_RECEIVING_BYTES = 320 * 2**20
"""Bytes of request bodies the server holds while they arrive, over all clients."""


@dataclass(frozen=True)
class GuardOptions:
    """The limits of :class:`ClientGuard` (see the module docstring); all > 0."""

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_pending_per_client: int = DEFAULT_MAX_PENDING_PER_CLIENT
    max_receiving_bytes: int = DEFAULT_MAX_RECEIVING_BYTES


class ClientGuard:
    """Counts pending connections per client address and bytes of bodies in reception."""

    def __init__(self, options: GuardOptions) -> None:
        self.options = options
        # per address, its pending connections, oldest first (a dict keeps insertion order)
        self._pending: defaultdict[str, dict[GuardedHandler, None]] = defaultdict(dict)
        self.receiving_bytes = 0
        self.evicted_connections = 0

    def pending(self, address: str) -> int:
        """How many connections of ``address`` are sending a request now."""
        return len(self._pending.get(address, ()))

    def _add(self, conn: GuardedHandler) -> None:
        self._pending[conn.address][conn] = None

    def _remove(self, conn: GuardedHandler) -> None:
        waiting = self._pending.get(conn.address)
        if waiting is not None:
            waiting.pop(conn, None)
            if not waiting:
                del self._pending[conn.address]

    def make_room(self, address: str) -> None:
        """Before a new connection of ``address`` counts: close its oldest pending ones over the cap.

        The oldest pending connection is the one that has stalled longest; a good request, which
        is in within milliseconds, is never the oldest for long, so it gets through even while
        the address is flooded with stalled connections.
        """
        waiting = self._pending.get(address)
        while waiting and len(waiting) >= self.options.max_pending_per_client:
            oldest = next(iter(waiting))
            oldest.set_pending(False)
            oldest.close_by_guard()
            self.evicted_connections += 1
            waiting = self._pending.get(address)

    def closed_by_guard(self, request: BaseRequest) -> bool:
        """True when this request's connection was closed by the guard (evicted or too slow)."""
        proto = request.protocol
        return isinstance(proto, GuardedHandler) and proto.closed_by_guard

    def headers_received(self, request: BaseRequest) -> None:
        """The request's headers are in (its handler runs): the header timer of the connection stops."""
        proto = request.protocol
        if isinstance(proto, GuardedHandler):
            proto.stop_header_timer()

    def request_received(self, request: BaseRequest) -> None:
        """The request on this connection is fully received: the connection stops being pending."""
        proto = request.protocol
        if isinstance(proto, GuardedHandler):
            proto.set_pending(False)

    def request_answered(self, request: BaseRequest) -> None:
        """The handler is done with the request; the connection is idle until its next bytes."""
        proto = request.protocol
        if isinstance(proto, GuardedHandler):
            proto.set_pending(False)
            proto.idle = True

    def take_bytes(self, n: int) -> bool:
        """Hold ``n`` more bytes of bodies in reception; False (holding nothing) when over the limit."""
        if self.receiving_bytes + n > self.options.max_receiving_bytes:
            return False
        self.receiving_bytes += n
        return True

    def give_bytes(self, n: int) -> None:
        """Release bytes taken with :meth:`take_bytes`."""
        self.receiving_bytes -= n

    def body_deadline(self) -> asyncio.Timeout:
        """An ``async with`` block that raises TimeoutError when a body takes longer than allowed."""
        return asyncio.timeout(self.options.body_timeout_s)


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler, counting itself as pending while a request arrives."""

    __slots__ = ("_guard", "_header_timer", "_pending_now", "address", "closed_by_guard", "idle")

    def __init__(self, manager: Any, *, guard: ClientGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self.address = ""
        self._pending_now = False
        self._header_timer: asyncio.TimerHandle | None = None
        self.closed_by_guard = False
        self.idle = False

    def close_by_guard(self) -> None:
        """Close the connection (too slow, or evicted for a newer one of its address)."""
        self.closed_by_guard = True
        self.stop_header_timer()
        self.force_close()

    def _start_header_timer(self) -> None:
        self.stop_header_timer()
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._guard.options.header_timeout_s, self._headers_too_slow)

    def stop_header_timer(self) -> None:
        """Cancel the header timer (the request's headers are in, or the connection is gone)."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.close_by_guard()

    def set_pending(self, pending: bool) -> None:
        """Count (or stop counting) this connection against its address's cap."""
        if pending == self._pending_now:
            return
        self._pending_now = pending
        if pending:
            self._guard._add(self)
        else:
            self._guard._remove(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._guard.make_room(self.address)
        self.set_pending(True)
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.idle:
            self.idle = False
            self.set_pending(True)
            self._start_header_timer()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.set_pending(False)
        self.stop_header_timer()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (or a handler failure): one log line, a v3io error body."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response is sent already; cannot send an error response")
        detail = (getattr(exc, "message", None) or message or "").strip().splitlines()
        reason = detail[-1].strip() if detail else HTTPStatus(status).phrase
        if status >= 500:  # a fault of ours, not of the request: keep the traceback
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            print(f"bad request from {request.remote}: {status} {reason}", file=sys.stderr, flush=True)
        if status == 400:
            kind = E.INVALID_ARGUMENT
        else:
            name = HTTPStatus(status).phrase.replace(" ", "")
            kind = E.V3ioError(-22 if status < 500 else -5, name, status)
        resp = web.Response(body=kind.body(reason[:200]), status=status, content_type="application/json")
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """``aiohttp.web.Server`` whose connections are :class:`GuardedHandler` under one :class:`ClientGuard`."""

    def __init__(self, handler: Any, *, guard: ClientGuard, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", guard.options.header_timeout_s)
        kwargs.setdefault("lingering_time", 2.0)
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)
