"""The one exception family of shardline.

Every error a user can cause (bad config, bad URL, missing column, oversized record, unreachable
stream) is a :class:`ShardlineError`. Its message says what was wrong and what to do next; the CLI
prints it without a traceback and exits non-zero.
"""

from __future__ import annotations


class ShardlineError(Exception):
    """Root of every error shardline raises on purpose."""


class ConfigError(ShardlineError):
    """A pipeline config, CLI option or URL is invalid."""


class PluginError(ShardlineError):
    """A plugin failed to load or registered something invalid."""


class SchemaError(ShardlineError):
    """A record batch lacks a mapped column or has a column of the wrong type."""


class RecordTooLargeError(ShardlineError):
    """A record exceeds a protocol limit (Data, PartitionKey or ClientInfo size)."""


class TransportError(ShardlineError):
    """A request to a stream failed in a way the caller may retry."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class StreamNotFoundError(TransportError):
    """The stream does not exist (and was not asked to be created)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, retryable=False)


class StreamExistsError(TransportError):
    """CreateStream was called for a stream that already exists."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=409, retryable=False)


class AccessDeniedError(TransportError):
    """The stream server refused the credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=403, retryable=False)


class StreamUnreachableError(TransportError):
    """The stream could not be reached when the sink started (connection refused, timeouts, 5xx)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class DeliveryError(ShardlineError):
    """Records were not delivered: a flush or close timed out, a stop left them, or the sink failed.

    ``undelivered`` is how many records were neither written nor dead-lettered (they stay
    unacknowledged, so a source resumes before them).
    """

    def __init__(self, message: str, *, undelivered: int = 0) -> None:
        super().__init__(message)
        self.undelivered = undelivered


class CheckpointError(ShardlineError):
    """A checkpoint file is unreadable or belongs to another pipeline."""
