"""Stream URLs: where a stream lives and how to reach it.

Three forms are accepted:

``http(s)://HOST:PORT/CONTAINER/STREAM-PATH``
    A v3io Web API endpoint (the embedded ``shardline serve`` or a real v3io system).
``v3io:///CONTAINER/STREAM-PATH``
    The convention v3io users already have: the endpoint comes from env ``V3IO_API`` (which may
    lack a scheme; ``http://`` is assumed) and the access key from ``V3IO_ACCESS_KEY``.
``local://DIR/CONTAINER/STREAM-PATH``
    The same durable store the server uses, opened in-process without HTTP. ``DIR`` is relative to
    the working directory (``local://data/bigdata/s``) or absolute with three slashes
    (``local:///abs/data/bigdata/s``).

    Split rule for ``local://``: ``DIR`` is the longest leading part of the path that is an
    existing store directory (one that holds the marker file ``shardline-store.json``). When no
    such directory exists yet, ``DIR`` is everything but the last two segments, i.e. the container
    and a one-segment stream name (``local://data/bigdata/s`` -> DIR ``data``, container
    ``bigdata``, stream ``s``); then the container must not be an existing folder outside a store
    (``local:///some/dir/stream`` with an existing ``/some/dir`` names no container, and is refused
    rather than turning ``/some`` into a store).

An access key given in the URL's user-info (``http://:KEY@host:port/...``) or as the
``access_key`` argument wins over the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from shardline import ConfigError, redact_url

STORE_MARKER = "shardline-store.json"
"""The file that marks a directory as a shardline stream store."""

MAX_SHARDS = 4096
"""The most shards a stream can have: CreateStream/UpdateStream with a larger ShardCount are refused
with InvalidArgumentException by the embedded server and the local store (v3io documents no limit of
its own; this is ours, and ``shardline validate`` checks ``[sink] create.shards`` against it)."""


@dataclass(frozen=True)
class StreamURL:
    """A parsed stream URL.

    ``endpoint`` is ``"http://host:port"`` (no trailing slash) for the Web API forms and None for
    ``local://``; ``local_dir`` is the store directory for ``local://`` and None otherwise.
    ``path`` has no leading or trailing slash.
    """

    scheme: str
    endpoint: str | None
    container: str
    path: str
    access_key: str | None
    local_dir: str | None = None

    def __str__(self) -> str:
        if self.scheme == "local":
            return f"local://{self.local_dir}/{self.container}/{self.path}"
        return f"{self.endpoint}/{self.container}/{self.path}"


def _split_segments(path: str, url: str) -> list[str]:
    segments = [unquote(s) for s in path.split("/") if s]
    for seg in segments:
        if seg in (".", "..") or "\x00" in seg or "\\" in seg:
            raise ConfigError(f"stream URL {redact_url(url)!r}: path segment {seg!r} is not allowed")
    return segments


def _container_and_path(segments: list[str], url: str) -> tuple[str, str]:
    if len(segments) < 2:
        raise ConfigError(
            f"stream URL {redact_url(url)!r} must name a container and a stream path, e.g. "
            f"http://127.0.0.1:8081/bigdata/my-stream"
        )
    return segments[0], "/".join(segments[1:])


def _normalise_endpoint(endpoint: str, url: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise ConfigError(
            f"stream URL {redact_url(url)!r}: the endpoint is empty; set V3IO_API to host:port or a URL"
        )
    if not endpoint.startswith(("http://", "https://")):
        endpoint = "http://" + endpoint
    return endpoint


def validate_stream_url(url: str, options: Mapping[str, Any] | None = None) -> None:
    """Check ``url`` as the transports will when they open, without connecting to anything.

    The ``validate`` seam of the http/https/v3io/local transport factories (``shardline validate``
    and the config loader call it). ``options`` are the ``[sink.transport]`` options (plus
    ``access_key``). Raises :class:`ConfigError` with the message :func:`parse_stream_url` gives.
    A ``v3io://`` URL is checked without its endpoint: ``V3IO_API`` may be set only where the
    pipeline runs (a job's environment); the transport says so at start when it is not.
    """
    key = (options or {}).get("access_key")
    parse_stream_url(url, access_key=key if isinstance(key, str) else None, need_endpoint=False)


def parse_stream_url(url: str, *, access_key: str | None = None, need_endpoint: bool = True) -> StreamURL:
    """Parse a stream URL (see the module docstring for the forms); raise ConfigError when invalid.

    ``need_endpoint=False``: a ``v3io://`` URL without env ``V3IO_API`` parses with the endpoint
    ``http://V3IO_API`` (a placeholder: only the form is checked) instead of failing.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"stream URL {redact_url(url)!r} is not a URL; use http://HOST:PORT/CONTAINER/STREAM, "
            f"v3io:///CONTAINER/STREAM or local://DIR/CONTAINER/STREAM"
        )
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(f"stream URL {redact_url(url)!r} has no host")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"stream URL {redact_url(url)!r} has an invalid port") from exc
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        endpoint = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
        container, path = _container_and_path(_split_segments(parts.path, url), url)
        key = access_key or (unquote(parts.password) if parts.password else None)
        key = key or os.environ.get("V3IO_ACCESS_KEY") or None
        return StreamURL(scheme, endpoint, container, path, key)
    if scheme == "v3io":
        parts = urlsplit(url)
        if parts.netloc:
            # v3io://container/path is a common slip; accept it as container/path.
            segments = _split_segments(parts.netloc + "/" + parts.path, url)
        else:
            segments = _split_segments(parts.path, url)
        container, path = _container_and_path(segments, url)
        api = os.environ.get("V3IO_API") or (None if need_endpoint else "V3IO_API")
        if not api:
            raise ConfigError(
                f"stream URL {redact_url(url)!r} takes its endpoint from env V3IO_API, which is not set; "
                f"export V3IO_API=HOST:PORT or use http://HOST:PORT/{container}/{path}"
            )
        key = access_key or os.environ.get("V3IO_ACCESS_KEY") or None
        return StreamURL("v3io", _normalise_endpoint(api, url), container, path, key)
    if scheme == "local":
        absolute = rest.startswith("/")
        segments = _split_segments(rest, url)
        if len(segments) < 3:
            raise ConfigError(
                f"stream URL {redact_url(url)!r} must be local://DIR/CONTAINER/STREAM (e.g. local://.shardline/data/bigdata/s)"
            )
        prefix = "/" if absolute else ""
        split = None
        for i in range(len(segments) - 2, 0, -1):
            candidate = Path(prefix + "/".join(segments[:i]))
            if (candidate / STORE_MARKER).is_file():
                split = i
                break
        if split is None:
            split = len(segments) - 2
            would_be = Path(prefix + "/".join(segments[: split + 1]))
            if would_be.is_dir():
                # e.g. local:///some/dir/stream: /some/dir is the user's folder, not a container of a
                # store at /some; making /some a store would fill a folder the user did not name
                raise ConfigError(
                    f"stream URL {url!r} names no container: {str(would_be)!r} is an existing folder "
                    f"that is not in a stream store; write local://DIR/CONTAINER/STREAM, "
                    f"e.g. local://{prefix}{'/'.join(segments[: split + 1])}/bigdata/{segments[-1]}"
                )
        local_dir = prefix + "/".join(segments[:split])
        container, path = segments[split], "/".join(segments[split + 1 :])
        return StreamURL("local", None, container, path, access_key, local_dir=local_dir)
    raise ConfigError(
        f"stream URL {redact_url(url)!r}: unknown scheme {scheme!r}; use http, https, v3io or local"
    )
