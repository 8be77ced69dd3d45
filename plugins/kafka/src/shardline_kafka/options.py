"""The ``[source] type = "kafka"`` options: what to read, from where, how to connect."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from shardline import SourceCheckpoint, SourceOptions

# kafka-python settings the source sets itself; `consumer` may not override them.
_RESERVED = {
    "bootstrap_servers",
    "group_id",
    "enable_auto_commit",
    "key_deserializer",
    "value_deserializer",
    "auto_offset_reset",
    "client_id",
    "isolation_level",
    "bootstrap_timeout_ms",
}


class KafkaSourceOptions(SourceOptions):
    """Options of the Kafka source (kafka-python underneath).

    Exactly one of ``topics`` and ``pattern`` names what to read. Secrets (``sasl_plain_password``,
    ``ssl_password``) are usually written as ``"${ENV_VAR}"`` in the pipeline file.
    """

    bootstrap_servers: str | list[str] = Field(description="host:port of one or more brokers")
    topics: list[str] | None = Field(default=None, description="topics to read")
    pattern: str | None = Field(default=None, description="regex of topic names to read (Python re)")
    group_id: str = Field(
        default="shardline", description="consumer group; processes sharing it split partitions"
    )
    client_id: str = "shardline"
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="how long to wait at start for a broker of bootstrap_servers to answer before the "
        "run fails (kafka-python's bootstrap_timeout_ms)",
    )
    start: str | int = Field(
        default="committed",
        description='"committed" (resume from the group\'s offsets), "earliest", "latest", '
        "or a timestamp: ISO-8601 (e.g. 2024-05-01T00:00:00Z) or integer milliseconds since the epoch",
    )
    reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a partition without a committed offset starts"
    )
    stop_at_end: bool = Field(
        default=False,
        description="stop at the end offsets seen at start (read_committed: the last stable offset)",
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        default="read_committed",
        description="read_committed: only committed transactional records (aborted ones never reach "
        "the stream), up to the last stable offset; read_uncommitted: everything up to the high watermark",
    )
    tombstones: Literal["skip", "dead-letter", "empty"] = Field(
        default="skip",
        description="messages with a null value (deletes of a compacted topic): skip them (counted, "
        "their offsets committed), dead-letter them, or write them with empty Data",
    )
    value_format: Literal["raw", "json"] = "raw"
    metadata_columns: list[Literal["key", "topic", "partition", "offset", "timestamp", "headers"]] = Field(
        default_factory=lambda: ["key", "topic", "partition", "offset", "timestamp", "headers"],
        description="the Kafka metadata columns each batch carries besides the value (or its JSON fields)",
    )
    dead_letter: str | None = Field(
        default=None,
        description='a .jsonl file for values that value_format = "json" cannot parse (with their offsets)',
    )
    max_batch_records: int = Field(default=10_000, ge=1, description="most records per yielded batch")
    poll_timeout_ms: int = Field(default=500, ge=1)
    commit_interval_ms: int = Field(
        default=100, ge=0, description="at most one offset commit per interval while acks arrive"
    )
    revoke_timeout_s: float = Field(
        default=60.0, gt=0, description="on rebalance, how long to wait for the sink to ack what it holds"
    )
    # security (passed to kafka-python as is)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    consumer: dict[str, Any] = Field(
        default_factory=dict, description="further kafka-python KafkaConsumer settings, passed through"
    )

    @field_validator("topics")
    @classmethod
    def _topics_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(isinstance(t, str) and t for t in value)):
            raise ValueError("topics: give at least one non-empty topic name")
        return value

    @field_validator("dead_letter")
    @classmethod
    def _dead_letter_jsonl(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith(".jsonl"):
            raise ValueError(f"dead_letter: {value!r} must be a .jsonl file (written line by line, durably)")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern: {value!r} is not a valid regular expression: {exc}") from exc
        return value

    @field_validator("start")
    @classmethod
    def _start_known(cls, value: str | int) -> str | int:
        start_timestamp_ms(value)  # raises ValueError with a message
        return value

    @field_validator("consumer")
    @classmethod
    def _consumer_keys_known(cls, value: dict[str, Any]) -> dict[str, Any]:
        from kafka import KafkaConsumer

        unknown = sorted(set(value) - set(KafkaConsumer.DEFAULT_CONFIG))
        if unknown:
            raise ValueError(f"consumer: unknown kafka-python setting(s) {', '.join(unknown)}")
        reserved = sorted(set(value) & _RESERVED)
        if reserved:
            raise ValueError(
                f"consumer: {', '.join(reserved)} cannot be set here: use the source options "
                f"bootstrap_servers, group_id, client_id, reset, isolation_level and connect_timeout_s; "
                f"auto-commit is always off (offsets are committed after the sink acknowledges)"
            )
        return value

    @model_validator(mode="after")
    def _one_subscription(self) -> KafkaSourceOptions:
        if (self.topics is None) == (self.pattern is None):
            raise ValueError("give exactly one of `topics` (a list of names) and `pattern` (a regex)")
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL"):
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        return self

    def consumer_config(self) -> dict[str, Any]:
        """The kafka-python KafkaConsumer settings these options stand for (auto-commit off)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": self.group_id,
            "client_id": self.client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": self.reset,
            "isolation_level": self.isolation_level,
            "bootstrap_timeout_ms": max(1, round(self.connect_timeout_s * 1000)),
            "security_protocol": self.security_protocol,
            "ssl_check_hostname": self.ssl_check_hostname,
            # fast group convergence; the consumer table may override
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "max_partition_fetch_bytes": 4 * 2**20,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password.get_secret_value()
            if self.sasl_plain_password
            else None,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password.get_secret_value() if self.ssl_password else None,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        config.update(self.consumer)
        return config


def start_timestamp_ms(start: str | int) -> int | None:
    """Milliseconds since the epoch for a timestamp ``start``, None for committed/earliest/latest.

    Raises ValueError for anything else.
    """
    if isinstance(start, bool):
        raise ValueError("start: expected committed, earliest, latest or a timestamp")
    if isinstance(start, int):
        if start < 0:
            raise ValueError("start: a timestamp in milliseconds must be >= 0")
        return start
    if start in ("committed", "earliest", "latest"):
        return None
    try:
        moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"start: expected committed, earliest, latest, an ISO-8601 timestamp "
            f"(2024-05-01T00:00:00Z) or milliseconds since the epoch, got {start!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


_TOPIC_PARTITION = re.compile(r"^.+:\d+$")


class KafkaCheckpoint(SourceCheckpoint):
    """What :meth:`KafkaSource.checkpoint` returns: acknowledged offsets per ``topic:partition``.

    Informational (Kafka's committed offsets are the durable state), but a damaged one is still
    refused rather than trusted.
    """

    group_id: str
    offsets: dict[str, Annotated[int, Field(ge=0)]] = Field(
        description="next offset to read per 'topic:partition'"
    )

    @field_validator("offsets")
    @classmethod
    def _keys_are_topic_partitions(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k in value if not _TOPIC_PARTITION.match(k)]
        if bad:
            raise ValueError(f"keys must be 'topic:partition', got {bad[0][:80]!r}")
        return value
