"""Serve an aiohttp handler on 127.0.0.1 from a daemon thread with its own event loop (test kit)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Protocol

from aiohttp import web
from aiohttp.web_request import BaseRequest
from shardline import ShardlineError


class Handler(Protocol):
    """What :class:`ThreadedServer` runs: a request handler with a start and an end in its loop."""

    async def startup(self) -> None: ...

    async def cleanup(self) -> None: ...

    async def __call__(self, request: BaseRequest) -> web.StreamResponse: ...


async def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> tuple[web.ServerRunner, str]:
    """Start ``handler`` on ``host:port`` (0: a free port) in the running loop; return (runner, url)."""
    await handler.startup()
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"


class ThreadedServer:
    """``handler`` served on a free port of 127.0.0.1 by a background thread; ``url`` once started.

    ``stop()`` (or leaving the ``with`` block) closes the server and ends the thread within
    ``timeout`` seconds. Raises :class:`~shardline.errors.ShardlineError` if it does not start in
    ``timeout`` seconds.
    """

    def __init__(self, handler: Handler, name: str, timeout: float = 30.0) -> None:
        self.handler = handler
        self._timeout = timeout
        ready: queue.Queue[tuple[str, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = (
            queue.Queue()
        )

        async def run() -> None:
            try:
                runner, url = await serve(handler)
            except BaseException as exc:
                ready.put(exc)
                return
            stop = asyncio.Event()
            ready.put((url, asyncio.get_running_loop(), stop))
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
                await handler.cleanup()

        self._thread = threading.Thread(target=lambda: asyncio.run(run()), name=name, daemon=True)
        self._thread.start()
        try:
            item = ready.get(timeout=timeout)
        except queue.Empty as exc:
            raise ShardlineError(f"{name} did not start within {timeout} s") from exc
        if isinstance(item, BaseException):
            raise ShardlineError(f"{name} failed to start: {item}") from item
        self.url, self._loop, self._stop = item

    def stop(self) -> None:
        """Close the server and wait for its thread."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(self._timeout)

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
