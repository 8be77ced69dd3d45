"""Run the real embedded server for tests: in a subprocess (:func:`start_server`) or in a thread.

    with start_server(tmp_path / "data", access_key="k") as server:
        client = v3io.dataplane.Client(endpoint=server.url, access_key="k")

``start_server`` runs ``python -m shardline_v3io serve --port 0 ...``, waits (polling, with a
deadline) for its ``listening on http://HOST:PORT`` line and returns a :class:`RunningServer`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from shardline import ShardlineError

_LISTENING = "listening on "
_METRICS = "metrics on "

FAULT_OPTIONS = {
    "fault_rate": "rate",
    "fault_shape": "shape",
    "fault_status": "status",
    "fault_status_rate": "status_rate",
    "fault_reset_rate": "reset_rate",
    "fault_latency": "latency_ms",
    "fault_latency_rate": "latency_rate",
    "fault_seed": "seed",
}
"""The fault options of both starters (Python spelling of ``--fault-*``) -> :class:`FaultConfig` fields."""


class RunningServer:
    """A server started by :func:`start_server` (subprocess) or :func:`start_server_thread`."""

    def __init__(self, url: str, data_dir: Path, process: subprocess.Popen[str] | None = None) -> None:
        self.url = url
        self.data_dir = data_dir
        self.process = process
        self.output: list[str] = []

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid if self.process is not None else os.getpid()

    @property
    def metrics_url(self) -> str | None:
        """``http://HOST:PORT/metrics`` of a server started with ``metrics_port`` (else None)."""
        for line in self.output:
            if line.startswith(_METRICS):
                return line[len(_METRICS) :].strip()
        return None

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL the server (nothing is flushed or closed: a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the server and wait for it to exit; return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _option_args(options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


def start_server(
    data_dir: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    **server_options: Any,
) -> RunningServer:
    """Start ``shardline serve`` in a subprocess on a free port and wait until it listens.

    ``server_options`` are the serve options in Python spelling (``access_key="k"``,
    ``fault_rate=0.1``, ``fsync=True``). The fault options (see :mod:`shardline_v3io.faults`):
    ``fault_rate``, ``fault_shape`` (``"random"``/``"tail"``), ``fault_status``,
    ``fault_status_rate``, ``fault_reset_rate``, ``fault_latency`` (ms), ``fault_latency_rate``,
    ``fault_seed``. Invalid values make the server exit; this raises ShardlineError with its output.
    """
    data_dir = Path(data_dir)
    cmd = [
        sys.executable,
        "-m",
        "shardline_v3io",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        "0",
        *_option_args(server_options),
    ]
    proc_env = dict(os.environ)
    proc_env.pop("SHARDLINE_ACCESS_KEY", None)
    proc_env["PYTHONUNBUFFERED"] = "1"
    if env:
        proc_env.update(env)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=proc_env, start_new_session=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise ShardlineError(
                f"the server did not start within {timeout}s; output: {''.join(seen)[-2000:]}"
            )
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            proc.wait(timeout=10)
            raise ShardlineError(f"the server exited with {proc.returncode}: {''.join(seen)[-2000:]}")
        seen.append(line)
        if line.startswith(_LISTENING):
            server = RunningServer(line[len(_LISTENING) :].strip(), data_dir, proc)
            server.output = seen
            return server


class ThreadServer(RunningServer):
    """The server running in a thread of this process (faster to start; ``kill`` is not available)."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        loop: asyncio.AbstractEventLoop,
        stop_event: asyncio.Event,
        thread: threading.Thread,
    ) -> None:
        super().__init__(url, data_dir)
        self._loop = loop
        self._stop_event = stop_event
        self._thread = thread

    def kill(self) -> None:
        """Not possible in-process; stops the server instead."""
        self.stop()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the server thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(timeout)
        return 0


def start_server_thread(
    data_dir: str | os.PathLike[str], *, timeout: float = 30.0, **server_options: Any
) -> ThreadServer:
    """Start the server in a background thread of this process on a free port.

    Takes the same ``server_options`` as :func:`start_server`; invalid fault values raise
    :class:`~shardline.errors.ConfigError` here.
    """
    from shardline_v3io.faults import FaultConfig
    from shardline_v3io.guard import (
        DEFAULT_BODY_TIMEOUT_S,
        DEFAULT_HEADER_TIMEOUT_S,
        DEFAULT_MAX_PENDING_PER_CLIENT,
        DEFAULT_MAX_RECEIVING_BYTES,
        GuardOptions,
    )
    from shardline_v3io.server import ServerOptions, start

    fault = FaultConfig(
        **{field: server_options.pop(name) for name, field in FAULT_OPTIONS.items() if name in server_options}
    )
    guard = GuardOptions(
        header_timeout_s=server_options.pop("header_timeout", DEFAULT_HEADER_TIMEOUT_S),
        body_timeout_s=server_options.pop("body_timeout", DEFAULT_BODY_TIMEOUT_S),
        max_pending_per_client=server_options.pop("max_pending_per_client", DEFAULT_MAX_PENDING_PER_CLIENT),
        max_receiving_bytes=server_options.pop("max_receiving_bytes", DEFAULT_MAX_RECEIVING_BYTES),
    )
    options = ServerOptions(data_dir=str(data_dir), port=0, fault=fault, guard=guard, **server_options)
    ready: queue.Queue[tuple[str, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    def main() -> None:
        async def run() -> None:
            try:
                runner, url, handler = await start(options)
            except BaseException as exc:
                ready.put(exc)
                return
            stop_event = asyncio.Event()
            ready.put((url, asyncio.get_running_loop(), stop_event))
            try:
                await stop_event.wait()
            finally:
                await runner.cleanup()
                handler.store.close()

        asyncio.run(run())

    thread = threading.Thread(target=main, name="shardline-server", daemon=True)
    thread.start()
    try:
        item = ready.get(timeout=timeout)
    except queue.Empty as exc:
        raise ShardlineError(f"the in-thread server did not start within {timeout}s") from exc
    if isinstance(item, BaseException):
        raise ShardlineError(f"the in-thread server failed to start: {item}") from item
    url, loop, stop_event = item
    return ThreadServer(url, Path(data_dir), loop, stop_event, thread)


__all__ = ["FAULT_OPTIONS", "RunningServer", "ThreadServer", "start_server", "start_server_thread"]
