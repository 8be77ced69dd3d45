"""A fault-injecting HTTP proxy in front of a Kinesis emulator: throttling whose records are really lost.

    with FaultProxy(emulator.endpoint_url, rate=0.3, seed=7) as proxy:
        url = emulator.stream_url("s", endpoint_url=proxy.url)
        ...                                   # write through the proxy
        assert proxy.stats.injected > 0

The emulators never throttle. For each PutRecords (``X-Amz-Target: Kinesis_20131202.PutRecords``,
JSON body) the proxy picks records to fail, **removes them from the body before forwarding** (so
they are not stored), forwards the rest, and answers the client in request order: the emulator's
entries for the forwarded records, and for the removed ones an entry with ``ErrorCode`` (default
``ProvisionedThroughputExceededException``) and ``ErrorMessage``, as Kinesis does
(https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html); ``FailedRecordCount``
counts both. Every other request (and a PutRecords that is not JSON) passes through unchanged.

The forwarded body no longer matches the client's SigV4 signature; the emulators do not check
signatures, so nothing is re-signed.

Shapes of the choice (``rate`` = expected fraction of records failed):

``random``
    every record fails independently with probability ``rate``.
``tail``
    ``m ~ Binomial(n, rate)`` and the LAST ``m`` records of the request fail (how a throttled
    shard answers: once one of its records fails, its later records in the request fail too).

To reshard "while writing" at a known moment, :meth:`FaultProxy.hold` holds the PutRecords that
come once N records went through, before they are forwarded (so the writer has a request in
flight), until :meth:`FaultProxy.release`.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field

import orjson
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from aiohttp.web_request import BaseRequest
from shardline import ConfigError

from shardline_kinesis._aiothread import ThreadedServer

SHAPES = ("random", "tail")
PUT_RECORDS = "Kinesis_20131202.PutRecords"
THROTTLED = "ProvisionedThroughputExceededException"
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class ProxyStats:
    """Counters of a :class:`FaultProxy` (read them from any thread)."""

    requests: int = 0
    put_requests: int = 0
    records: int = 0
    forwarded: int = 0
    injected: int = 0
    passed_unparsed: int = 0


@dataclass
class ThrottleFaults:
    """Which records of a PutRecords to fail: ``rate`` in [0, 1], ``shape`` in :data:`SHAPES`.

    Raises :class:`~shardline.errors.ConfigError` on other values. ``rate`` may be changed while
    the proxy runs (0.0 turns faults off).
    """

    rate: float = 0.0
    shape: str = "random"
    seed: int | None = None
    error_code: str = THROTTLED
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigError(f"fault rate must be a fraction within [0, 1] (0.3 = 30%), got {self.rate}")
        if self.shape not in SHAPES:
            raise ConfigError(f"fault shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        self._rng = random.Random(self.seed)

    def failing(self, n: int) -> list[int]:
        """Ascending indexes, within a request of ``n`` records, of those to fail."""
        with self._lock:
            rate, rng = self.rate, self._rng
            if rate <= 0.0 or n == 0:
                return []
            if self.shape == "random":
                return [i for i in range(n) if rng.random() < rate]
            m = sum(1 for _ in range(n) if rng.random() < rate)  # Binomial(n, rate)
            return list(range(n - m, n))


class Gate:
    """Holds PutRecords requests before forwarding while closed (thread-safe; every wait bounded)."""

    def __init__(self, stats: ProxyStats, max_hold_s: float) -> None:
        self.stats = stats
        self.max_hold_s = max_hold_s
        self._after: int | None = None  # hold once this many records were forwarded
        self._open = threading.Event()
        self._open.set()
        self._holding = threading.Event()

    def close(self, after_records: int = 0) -> None:
        """Hold every PutRecords that arrives once ``after_records`` records were forwarded in all,
        until :meth:`open`."""
        self._holding.clear()
        self._after = after_records
        self._open.clear()

    def open(self) -> None:
        """Let held and later requests through."""
        self._after = None
        self._open.set()

    def wait_holding(self, timeout_s: float) -> bool:
        """Block until a request is held (True) or ``timeout_s`` seconds pass (False)."""
        return self._holding.wait(timeout_s)

    async def pass_through(self) -> None:
        """Called before forwarding: wait while closed (at most ``max_hold_s`` seconds)."""
        after = self._after
        if after is None or self.stats.forwarded < after:
            return
        self._holding.set()
        await asyncio.get_running_loop().run_in_executor(None, self._open.wait, self.max_hold_s)


class _ProxyHandler:
    def __init__(
        self, upstream: str, faults: ThrottleFaults, stats: ProxyStats, gate: Gate, timeout_s: float
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.stats = stats
        self.gate = gate
        self.timeout_s = timeout_s
        self.session: ClientSession | None = None

    async def startup(self) -> None:
        self.session = ClientSession(
            connector=TCPConnector(limit=64),
            timeout=ClientTimeout(total=self.timeout_s),
            auto_decompress=False,
        )

    async def cleanup(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _forward(self, request: BaseRequest, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self.session.request(
            request.method, self.upstream + request.raw_path, data=body, headers=headers
        ) as answer:
            data = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return answer.status, out, data

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.stats.requests += 1
        if request.headers.get("X-Amz-Target") != PUT_RECORDS:
            return self._answer(*await self._forward(request, body))
        self.stats.put_requests += 1
        try:
            doc = orjson.loads(body)
            records = doc["Records"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.stats.passed_unparsed += 1  # e.g. CBOR: passed through, no faults
            return self._answer(*await self._forward(request, body))
        self.stats.records += len(records)
        await self.gate.pass_through()
        failing = self.faults.failing(len(records))
        self.stats.forwarded += len(records) - len(failing)
        if not failing:
            return self._answer(*await self._forward(request, body))
        dropped = set(failing)
        kept = [r for i, r in enumerate(records) if i not in dropped]
        upstream: list[dict[str, object]] = []
        failed = 0
        status, headers = 200, {"Content-Type": "application/x-amz-json-1.1"}
        if kept:
            doc["Records"] = kept
            status, headers, data = await self._forward(request, orjson.dumps(doc))
            if status != 200:
                return self._answer(status, headers, data)  # the whole request failed: nothing stored
            answer = orjson.loads(data)
            upstream, failed = answer["Records"], int(answer.get("FailedRecordCount", 0))
        self.stats.injected += len(dropped)
        stream = doc.get("StreamName") or doc.get("StreamARN") or "?"
        error = {
            "ErrorCode": self.faults.error_code,
            "ErrorMessage": f"Rate exceeded for a shard of stream {stream} (injected by the fault proxy)",
        }
        entries = iter(upstream)
        merged = [error if i in dropped else next(entries) for i in range(len(records))]
        out = orjson.dumps({"FailedRecordCount": failed + len(dropped), "Records": merged})
        return self._answer(status, headers, out)

    @staticmethod
    def _answer(status: int, headers: dict[str, str], body: bytes) -> web.Response:
        return web.Response(status=status, headers=headers, body=body)


class FaultProxy:
    """A proxy on a free port of 127.0.0.1 (``.url``) forwarding to ``upstream`` with injected throttling.

    ``rate``/``shape``/``seed``/``error_code`` make its :class:`ThrottleFaults` (``.faults``, whose
    ``rate`` may be changed while it runs); ``.stats`` counts requests and injected failures.
    ``timeout_s`` bounds each forwarded request, ``max_hold_s`` each hold (:meth:`hold`). Serves
    from a daemon thread with its own event loop, so sync tests and ``shardline run`` subprocesses
    can use it; ``stop()`` ends it.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        shape: str = "random",
        seed: int | None = None,
        error_code: str = THROTTLED,
        timeout_s: float = 30.0,
        max_hold_s: float = 60.0,
    ) -> None:
        self.faults = ThrottleFaults(rate=rate, shape=shape, seed=seed, error_code=error_code)
        self.stats = ProxyStats()
        self.gate = Gate(self.stats, max_hold_s=max_hold_s)
        handler = _ProxyHandler(upstream, self.faults, self.stats, self.gate, timeout_s)
        self._server = ThreadedServer(handler, name="shardline-kinesis-fault-proxy")
        self.url = self._server.url

    def hold(self, after_records: int = 0) -> None:
        """Hold PutRecords before forwarding them, once ``after_records`` records were forwarded in
        all (0: from the next one), until :meth:`release`."""
        self.gate.close(after_records)

    def wait_holding(self, timeout_s: float = 30.0) -> bool:
        """Block until a PutRecords is held (True), or ``timeout_s`` seconds pass (False)."""
        return self.gate.wait_holding(timeout_s)

    def release(self) -> None:
        """Forward the held requests and stop holding."""
        self.gate.open()

    def stop(self) -> None:
        """Close the proxy (in-flight requests are cut)."""
        self._server.stop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SHAPES", "THROTTLED", "FaultProxy", "Gate", "ProxyStats", "ThrottleFaults"]
