"""Secrets never leave a URL: the one helper used wherever a stream URL is stored, logged or printed.

Checkpoints, dead-letter rows, log lines, event hooks, ``shardline validate`` and error messages
show :func:`redact_url` of a stream URL, never the URL itself.
"""

from __future__ import annotations

import re

REDACTED = "***"
"""What a secret is replaced with."""

_SECRET_PARAM = re.compile(r"key|secret|token|passw|signature|sig$|credential|auth", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info and the values of secret-looking query parameters
    (``access_key``, ``token``, ``X-Amz-Signature``, ...) replaced by ``***``.

    ``http://user:KEY@host:8081/bigdata/s`` -> ``http://user:***@host:8081/bigdata/s``;
    ``http://:KEY@host/c/s`` -> ``http://:***@host/c/s``. A URL without secrets comes back
    unchanged (character for character), and so does a string that is not a URL. Never raises.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i >= 0:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:{REDACTED}@{hostport}" if colon else authority
    before_fragment, hash_, fragment = tail.partition("#")
    path, qmark, query = before_fragment.partition("?")
    if qmark:
        query = "&".join(_redact_param(p) for p in query.split("&"))
    return f"{scheme}{sep}{authority}{path}{qmark}{query}{hash_}{fragment}"


def _redact_param(param: str) -> str:
    name, eq, value = param.partition("=")
    if eq and value and _SECRET_PARAM.search(name):
        return f"{name}={REDACTED}"
    return param
