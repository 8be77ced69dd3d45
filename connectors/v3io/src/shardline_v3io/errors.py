"""The one table of v3io error names, codes and HTTP statuses the embedded server answers with.

v3io reports errors as ``{"ErrorCode": <negative int>, "ErrorMessage": "<Name>"}``. The names are
the ones the Streaming Web API documents; the codes are errno-like negative ints (v3io does not
publish its numbers, so these are ours, stable from release to release).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class V3ioError:
    """One error kind: its code, name, HTTP status, and whether a client should retry it."""

    code: int
    name: str
    status: int
    retryable: bool = False

    def body(self, detail: str | None = None) -> bytes:
        """The JSON error body; ``detail`` adds a human-readable ``ErrorDetail`` field."""
        doc: dict[str, object] = {"ErrorCode": self.code, "ErrorMessage": self.name}
        if detail:
            doc["ErrorDetail"] = detail
        return orjson.dumps(doc)


INVALID_ARGUMENT = V3ioError(-22, "InvalidArgumentException", 400)
SHARD_OUT_OF_RANGE = V3ioError(-34, "ShardIDOutOfRangeException", 400)
RESOURCE_NOT_FOUND = V3ioError(-2, "ResourceNotFoundException", 404)
NO_SUCH_FILE = V3ioError(-2, "No such file or directory", 404)
RESOURCE_IS_NOT_STREAM = V3ioError(-20, "ResourceIsnotStream", 400)
PERMISSION_DENIED = V3ioError(-13, "Permission denied", 403)
ILLEGAL_LOCATION = V3ioError(-75, "IllegalLocationException", 400)
RESOURCE_EXISTS = V3ioError(-17, "ResourceInUseException", 409)
DIRECTORY_NOT_EMPTY = V3ioError(-39, "Directory not empty", 409)
UNSUPPORTED_FUNCTION = V3ioError(-95, "UnsupportedOperationException", 400)
METHOD_NOT_ALLOWED = V3ioError(-95, "MethodNotAllowed", 405)
RANGE_NOT_SATISFIABLE = V3ioError(-22, "InvalidRange", 416)
REQUEST_TIMEOUT = V3ioError(-110, "RequestTimeout", 408, retryable=True)
SERVICE_UNAVAILABLE = V3ioError(-11, "ServiceUnavailable", 503, retryable=True)
INTERNAL_ERROR = V3ioError(-5, "InternalError", 500, retryable=True)

RESOURCE_BUSY = V3ioError(-16, "ResourceBusyException", 503, retryable=True)
"""The per-record error fault injection uses: the shard could not take the record now; retry it."""

RETRYABLE_RECORD_ERRORS: frozenset[str] = frozenset({RESOURCE_BUSY.name, "ThrottlingException"})
"""Per-record ErrorMessage names after which a client should retry the record."""

BY_STATUS_DEFAULT: dict[int, V3ioError] = {
    400: INVALID_ARGUMENT,
    403: PERMISSION_DENIED,
    404: RESOURCE_NOT_FOUND,
    409: RESOURCE_EXISTS,
    500: INTERNAL_ERROR,
    503: SERVICE_UNAVAILABLE,
}


def error_for_status(status: int) -> V3ioError:
    """The error kind used when a whole request is answered with ``status`` (fault injection)."""
    if status in BY_STATUS_DEFAULT:
        return BY_STATUS_DEFAULT[status]
    return V3ioError(-5, "InjectedFault", status, retryable=status >= 500 or status == 429)


def record_error_detail(result: dict[str, object]) -> str | None:
    """The ``ErrorDetail`` of a failed per-record result (``"PartitionKey is 300 bytes; the limit is
    256"``), or None when the server sent none (v3io itself sends only ErrorCode and ErrorMessage)."""
    detail = result.get("ErrorDetail")
    return str(detail) if detail else None
