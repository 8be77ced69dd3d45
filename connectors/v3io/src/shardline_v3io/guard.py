"""What keeps slow or hostile clients from starving good ones: time limits and a per-client cap.

* **Header time**: a connection must send a request's headers within ``header_timeout_s`` of
  connecting or of its last response (aiohttp's keep-alive timer, which also closes idle ones).
* **Body time**: the server reads a request body within ``body_timeout_s``
  (:meth:`ClientGuard.body_deadline`).
* **Pending connections per client address**: a connection is *pending* from its first byte until
  its request is fully received (headers and body). A client address may hold at most
  ``max_pending_per_client`` pending connections; further connections from it are closed at once.
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
DEFAULT_MAX_PENDING_PER_CLIENT = 64
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
        self._pending: defaultdict[str, int] = defaultdict(int)
        self.receiving_bytes = 0
        self.refused_connections = 0

    def pending(self, address: str) -> int:
        """How many connections of ``address`` are sending a request now."""
        return self._pending.get(address, 0)

    def _add(self, address: str) -> None:
        self._pending[address] += 1

    def _remove(self, address: str) -> None:
        n = self._pending[address] - 1
        if n > 0:
            self._pending[address] = n
        else:
            del self._pending[address]

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

    __slots__ = ("_address", "_guard", "_pending_now", "_refused", "idle")

    def __init__(self, manager: Any, *, guard: ClientGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address = ""
        self._pending_now = False
        self._refused = False
        self.idle = False

    def set_pending(self, pending: bool) -> None:
        """Count (or stop counting) this connection against its address's cap."""
        if pending == self._pending_now:
            return
        self._pending_now = pending
        if pending:
            self._guard._add(self._address)
        else:
            self._guard._remove(self._address)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._guard.pending(self._address) >= self._guard.options.max_pending_per_client:
            self._refused = True
            self._guard.refused_connections += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        self.set_pending(True)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.idle:
            self.idle = False
            self.set_pending(True)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self.set_pending(False)
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
