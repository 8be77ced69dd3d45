"""Pipeline config: TOML or YAML files, ``${ENV}`` substitution, ``--set`` overrides, strict models.

A pipeline file has four sections::

    [source]                      # type = a registered source; the other keys are its options
    type = "parquet"
    path = "data/events/*.parquet"

    [sink]                        # where records go (StreamSink options)
    stream = "http://127.0.0.1:8081/bigdata/events"   # or v3io:///… or local://DIR/…
    create = { shards = 8, retention_hours = 24 }       # create the stream when missing
    dead_letter = "dead-letters.jsonl"                   # optional: records that can never be written
    [sink.limits]                                        # optional tuning
    max_in_flight_bytes = "64MiB"

    [mapping]                     # how a row becomes a record
    partition_key = "user_id"
    data = "json"
    partitioner = "hash"

    [checkpoint]                  # optional: where a resumable source keeps its progress
    path = ".shardline/events.ckpt"

Rules:

- Unknown keys are errors, everywhere. Every error message names the file, the dotted key and what
  was expected: ``pipeline.toml: sink.create.shards: expected an integer >= 1, got "eight"``.
- ``[source]`` is validated by the ``Options`` model of the source class its ``type`` names (looked
  up in the plugin registry); ``[sink]``, ``[mapping]`` and ``[checkpoint]`` by the models below.
- String values may hold ``${NAME}`` (an environment variable; an error when unset) or
  ``${NAME:-default}``; ``$$`` is a literal ``$``. Substitution happens after parsing, inside
  string values only, so a secret can never change the structure of the file. A value that came
  from the environment is never echoed in an error message.
- Overrides (``shardline run --set sink.create.shards=16``) are applied after substitution. The
  value is read as a TOML value when it parses as one (``16``, ``true``, ``"x"``, ``[1, 2]``) and
  as a plain string otherwise (``data/*.parquet``).
- Relative paths (Parquet files, checkpoint, dead-letter file, ``local://`` stores) are relative to
  the working directory of the process, not to the config file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from shardline.errors import ConfigError, PluginError
from shardline.redact import redact_url
from shardline.source import Source, SourceOptions

BUILTIN_CODECS = ("json", "raw", "arrow", "template")
BUILTIN_PARTITIONERS = ("hash", "modulo", "server", "column", "round-robin")
Ordering = Literal["strict", "paranoid", "none"]
"""The sink's ordering modes (``shardline.engine.ORDERING_MODES``)."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_size(value: Any) -> Any:
    """Read ``"64MiB"``, ``"10 MB"`` or ``1048576`` as a number of bytes (other values pass through)."""
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    return value


def _refuse_bool(kind: str) -> Any:
    """A before-validator refusing ``true``/``false`` where a number belongs (pydantic reads true as 1)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(kind, "Input should be a valid number, not true or false")
        return value

    return BeforeValidator(check)


Int = Annotated[int, _refuse_bool("int_type")]
"""An integer option: numbers and numeric strings (``"${SHARDS}"``), never ``true``."""
Float = Annotated[float, _refuse_bool("float_type")]
"""A number option: numbers and numeric strings, never ``true``."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    _refuse_bool("int_type"),
    Field(ge=1, json_schema_extra={"expected": 'a size in bytes >= 1 (a number or a string like "64MiB")'}),
]


class StrictModel(BaseModel):
    """Base of the config models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class CreateOptions(StrictModel):
    """``[sink] create``: create the stream with these settings when it does not exist."""

    shards: Int = Field(ge=1, description="number of shards of the new stream")
    retention_hours: Int = Field(24, ge=1, description="how long the stream keeps records")


class LimitsOptions(StrictModel):
    """``[sink.limits]``: how much the sink keeps in flight and how long it retries."""

    max_in_flight_bytes: ByteSize = 64 * 2**20
    max_in_flight_requests: Int = Field(16, ge=1)
    linger_ms: Float = Field(5.0, ge=0)
    retry_deadline_s: Float | None = Field(
        None, gt=0, description="dead-letter records still refused per record this long (default: never)"
    )
    shard_refresh_s: Float = Field(30.0, gt=0)
    start_timeout_s: Float = Field(5.0, gt=0, description="how long connecting retries an unreachable stream")
    max_records_per_request: Int | None = Field(
        None, ge=1, description="records per request (default and maximum: the stream's own limit)"
    )
    max_request_bytes: ByteSize | None = Field(
        None, description="bytes per request body (default and maximum: the stream's own limit)"
    )


class SinkConfig(StrictModel):
    """``[sink]``: the target stream and how records are delivered to it."""

    stream: str = Field(min_length=1, description="stream URL: http(s)://, v3io://, local://, kinesis://")
    create: CreateOptions | None = None
    dead_letter: str | None = Field(None, min_length=1, description="a .jsonl file or a .parquet directory")
    ordering: Ordering = "strict"
    access_key: str | None = Field(None, description="credentials for the transport (use ${ENV})")
    limits: LimitsOptions = Field(default_factory=lambda: LimitsOptions.model_validate({}))
    transport: dict[str, Any] = Field(default_factory=dict, description="transport-specific options")


class MappingConfig(StrictModel):
    """``[mapping]``: how the columns of a row become a stream record."""

    partition_key: str | None = Field(None, min_length=1)
    data: str = Field("json", min_length=1)
    data_column: str | None = Field(None, min_length=1)
    template: str | None = Field(None, min_length=1, description='Data template for data = "template"')
    client_info: str | None = Field(None, min_length=1)
    shard_id: str | None = Field(None, min_length=1)
    partitioner: str = Field("hash", min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> MappingConfig:
        if self.partitioner == "column" and not self.shard_id:
            raise ValueError('partitioner "column" needs shard_id = "<column holding each record\'s shard>"')
        if self.data == "raw" and not self.data_column:
            raise ValueError('data "raw" needs data_column = "<binary or string column>"')
        if self.data == "template" and not self.template:
            raise ValueError('data "template" needs template = "<text with {column} fields>"')
        return self


class CheckpointConfig(StrictModel):
    """``[checkpoint]``: where progress is kept so that a stopped run resumes where it stopped."""

    path: str = Field(min_length=1)
    interval_s: float = Field(1.0, gt=0, description="write at most this often while running")


class _PipelineModel(StrictModel):
    source: dict[str, Any]
    sink: SinkConfig
    mapping: MappingConfig = Field(default_factory=lambda: MappingConfig.model_validate({}))
    checkpoint: CheckpointConfig | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline: the source class and its options, the sink, the mapping, the checkpoint."""

    origin: str
    source_type: str
    source_cls: type[Source]
    source_options: SourceOptions
    sink: SinkConfig
    mapping: MappingConfig = field(default_factory=lambda: MappingConfig.model_validate({}))
    checkpoint: CheckpointConfig | None = None
    mapping_origin: str = "pipeline file"
    """Where :attr:`mapping` came from: ``"pipeline file"``, ``"source default (kafka)"`` (``", with
    --set"`` when overrides changed it), ``"built-in default"`` or ``"--set"``."""

    def describe_mapping(self) -> str:
        """The mapping in one line with its origin: ``mapping: source default (kafka): data=raw, ...``."""
        fields = self.mapping.model_dump(exclude_defaults=False)
        shown = [
            f"{k}={v}"
            for k, v in fields.items()
            if v is not None and not (k == "partitioner" and v == "hash")
        ]
        if self.mapping.partition_key is None and self.mapping.shard_id is None:
            shown.append("no PartitionKey (round robin)")
        return f"mapping: {self.mapping_origin}: {', '.join(shown)}"

    def sink_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`shardline.StreamSink` (besides the stream URL)."""
        transport_options = dict(self.sink.transport)
        if self.sink.access_key is not None:
            transport_options["access_key"] = self.sink.access_key
        return {
            "partition_key": self.mapping.partition_key,
            "data": self.mapping.data,
            "data_column": self.mapping.data_column,
            "data_template": self.mapping.template,
            "client_info": self.mapping.client_info,
            "shard_id": self.mapping.shard_id,
            "partitioner": self.mapping.partitioner,
            "create": self.sink.create.model_dump() if self.sink.create else None,
            "dead_letter": self.sink.dead_letter,
            "ordering": self.sink.ordering,
            **self.sink.limits.model_dump(),
            "transport_options": transport_options or None,
            "origin_columns": list(self.source_cls.origin_columns) or None,
        }

    def fingerprint(self) -> str:
        """A digest of what a checkpoint's positions depend on: the source identity and the target stream.

        Options that do not move positions (the source class decides, see
        :meth:`Source.resume_identity`) and the host:port of the stream (a local server may come
        back on another port) are left out.
        """
        identity = {
            "source": self.source_type,
            "options": self.source_cls.resume_identity(self.source_options),
            "stream": _stream_identity(self.sink.stream),
        }
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]


def _stream_identity(url: str) -> str:
    """What names the stream in a checkpoint's fingerprint: the transport factory's optional
    ``identity(url)`` (e.g. without a host:port that may change), else ``scheme:rest``."""
    from shardline.plugins import registered

    redacted = redact_url(url)  # a key in the URL is no part of the identity
    scheme, _, rest = redacted.partition("://")
    identity = getattr(registered("transports").get(scheme.lower()), "identity", None)
    if callable(identity):
        return str(identity(redacted))
    return f"{scheme}:{rest.strip('/')}"


# --------------------------------------------------------------------------- loading


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML (or, for ``.yaml``/``.yml``, YAML; for ``.json``, JSON) file into a dict; raise
    ConfigError naming the file. A key given twice in one table is an error in all three."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if name.endswith(".json"):
        doc = _read_json(name, text)
    elif name.endswith((".yaml", ".yml")):
        try:
            doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" (at line {mark.line + 1}, column {mark.column + 1})"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{name}: invalid YAML: {problem}{where}") from None
        if doc is None:
            doc = {}
    else:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: expected a table of sections (source, sink, ...), got {_kind(doc)}")
    return doc


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (as TOML does)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _read_json(name: str, text: str) -> Any:
    """Parse a ``.json`` pipeline; a duplicate key is an error (as in TOML)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for key, value in pairs:
            if key in doc:
                raise ConfigError(f"{name}: invalid JSON: duplicate key {key!r}")
            doc[key] = value
        return doc

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{name}: invalid JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})"
        ) from None


_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


def substitute_env(
    doc: Any, env: Mapping[str, str] | None = None, *, origin: str = "config"
) -> tuple[Any, set[tuple[str | int, ...]]]:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of ``doc``.

    Returns the new document and the set of key paths whose value came (in part) from the
    environment. Raises ConfigError for an unset variable without default or a malformed ``${``.
    """
    env = os.environ if env is None else env
    from_env: set[tuple[str | int, ...]] = set()

    def sub(value: str, loc: tuple[str | int, ...]) -> str:
        def repl(match: re.Match[str]) -> str:
            text = match.group(0)
            if text == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name is None:
                raise ConfigError(
                    f"{origin}: {_dotted(loc)}: malformed {text!r}; write ${{NAME}} or ${{NAME:-default}}"
                )
            from_env.add(loc)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{origin}: {_dotted(loc)}: environment variable {name} is not set "
                f"(export it, or write ${{{name}:-default}})"
            )

        return _ENV_RE.sub(repl, value)

    def walk(node: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(node, str):
            return sub(node, loc) if "$" in node else node
        if isinstance(node, dict):
            return {k: walk(v, (*loc, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(node)]
        return node

    return walk(doc, ()), from_env


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``key.path=value`` into its key path and value (a TOML value, else the plain string)."""
    key, sep, raw = text.partition("=")
    parts = tuple(p.strip() for p in key.strip().split("."))
    if not sep or not all(parts):
        raise ConfigError(f"--set {text}: expected KEY.PATH=VALUE, e.g. --set sink.create.shards=16")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts, value


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str]) -> set[tuple[str, ...]]:
    """Apply ``--set`` overrides to ``doc`` in place; return the key paths they set."""
    paths = set()
    for text in overrides:
        parts, value = parse_override(text)
        node = doc
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {_dotted(parts[: i + 1])} is {_kind(child)}, not a table")
            node = child
        node[parts[-1]] = value
        paths.add(parts)
    return paths


def load_pipeline(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Read, substitute, override and validate a pipeline file. Raises :class:`ConfigError`."""
    origin = str(path)
    doc = read_document(path)
    return build_pipeline(doc, origin=origin, overrides=overrides, env=env)


def build_pipeline(
    doc: Mapping[str, Any],
    *,
    origin: str = "pipeline",
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Validate an already parsed pipeline document (a dict shaped like the file)."""
    substituted, from_env = substitute_env(dict(doc), env, origin=origin)
    file_has_mapping = "mapping" in substituted
    overridden = apply_overrides(substituted, overrides)
    ctx = _ErrorContext(origin, from_env, overridden)
    errors: list[str] = []

    source_cls: type[Source] | None = None
    source_options: SourceOptions | None = None
    source_doc = substituted.get("source")
    if isinstance(source_doc, dict):
        source_type = source_doc.get("type")
        if source_type is None:
            expected = 'missing required key (the kind of source, e.g. "parquet")'
            errors.append(ctx.line(("source", "type"), expected))
        elif not isinstance(source_type, str):
            errors.append(ctx.line(("source", "type"), "expected a string", source_type))
        else:
            from shardline.plugins import lookup

            try:
                source_cls = lookup("sources", source_type)
            except PluginError as exc:
                errors.append(ctx.line(("source", "type"), str(exc)))
        if source_cls is not None:
            options = {k: v for k, v in source_doc.items() if k != "type"}
            try:
                source_options = source_cls.Options.model_validate(options)
            except ValidationError as exc:
                errors.extend(ctx.format(exc, source_cls.Options, prefix=("source",)))

    mapping_origin = _choose_mapping(substituted, file_has_mapping, source_cls, source_options, source_doc)
    model: _PipelineModel | None = None
    try:
        model = _PipelineModel.model_validate(substituted)
    except ValidationError as exc:
        errors.extend(ctx.format(exc, _PipelineModel))

    if model is not None:
        errors.extend(_check_names(model.mapping, ctx))
        stream_errors = _check_stream(model.sink.stream, ctx)
        errors.extend(stream_errors)
        if not stream_errors:
            option_errors = _check_transport_options(model.sink.stream, model.sink.transport, ctx)
            errors.extend(option_errors)
            if not option_errors:
                errors.extend(_check_with_transport(model.sink, ctx, model.mapping))

    if errors:
        raise ConfigError("; ".join(errors))
    assert model is not None and source_cls is not None and source_options is not None
    assert isinstance(source_doc, dict)
    return PipelineConfig(
        origin=origin,
        source_type=str(source_doc["type"]),
        source_cls=source_cls,
        source_options=source_options,
        sink=model.sink,
        mapping=model.mapping,
        checkpoint=model.checkpoint,
        mapping_origin=mapping_origin,
    )


def _choose_mapping(
    doc: dict[str, Any],
    file_has_mapping: bool,
    source_cls: type[Source] | None,
    source_options: SourceOptions | None,
    source_doc: Any,
) -> str:
    """Put the mapping to use into ``doc["mapping"]``; return where it came from, in words.

    A ``[mapping]`` table in the file wins as a whole. Without one, the source's
    :meth:`~shardline.Source.default_mapping` is used, with any ``--set mapping.KEY=...`` on top;
    without either, the built-in default (``data = "json"`` over all columns, no PartitionKey).
    """
    if file_has_mapping:
        return "pipeline file"
    default = None
    if source_cls is not None and source_options is not None:
        default = source_cls.default_mapping(source_options)
    set_keys = doc.get("mapping")
    if not default:
        return "--set" if set_keys else "built-in default"
    merged = dict(default)
    if isinstance(set_keys, dict):
        merged.update(set_keys)
    doc["mapping"] = merged
    name = source_doc.get("type") if isinstance(source_doc, dict) else "source"
    return f"source default ({name})" + (", with --set" if set_keys else "")


def _check_stream(stream: str, ctx: _ErrorContext) -> list[str]:
    from shardline.plugins import install_hint, registered

    scheme, sep, rest = stream.partition("://")
    if not sep or not scheme or not rest:
        expected = "expected a stream URL like http://HOST:PORT/CONTAINER/STREAM, v3io:///… or local://DIR/…"
        return [ctx.line(("sink", "stream"), expected, redact_url(stream))]
    schemes = sorted(registered("transports"))
    if scheme.lower() not in schemes:
        known = ", ".join(schemes) or "none"
        hint = install_hint("transports", scheme)
        expected = f"no transport for {scheme + '://'!r} (known: {known}); {hint}"
        return [ctx.line(("sink", "stream"), expected)]
    return []


def _check_with_transport(
    sink: SinkConfig, ctx: _ErrorContext, mapping: MappingConfig | None = None
) -> list[str]:
    """What the stream's transport checks before it connects: its URL form (the factory's optional
    ``validate(url, options)``, raising :class:`ConfigError`), ``create.shards`` against its
    optional ``max_shards``, and the mapping against its optional ``wire_limits`` (a
    :class:`~shardline.wire.WireLimits`, or a function returning one, so that a plugin need not
    import its wire at start): a ``client_info`` column for a protocol without one. Nothing is
    connected to."""
    from shardline.plugins import registered

    scheme = sink.stream.partition("://")[0].lower()
    factory = registered("transports").get(scheme)
    errors: list[str] = []
    validate = getattr(factory, "validate", None)
    if callable(validate):
        options = dict(sink.transport)
        if sink.access_key is not None:
            options["access_key"] = sink.access_key
        try:
            validate(sink.stream, options)
        except ConfigError as exc:
            errors.append(ctx.line(("sink", "stream"), str(exc)))
    max_shards = getattr(factory, "max_shards", None)
    if sink.create is not None and isinstance(max_shards, int) and sink.create.shards > max_shards:
        expected = f"expected an integer <= {max_shards} (the most shards a {scheme}:// stream can have)"
        errors.append(ctx.line(("sink", "create", "shards"), expected, sink.create.shards))
    limits = getattr(factory, "wire_limits", None)
    limits = limits() if callable(limits) else limits
    if mapping is not None and mapping.client_info and limits is not None and not limits.client_info:
        expected = (
            f"a {scheme}:// stream has no client info field; remove client_info from the mapping "
            "(or put the value into Data)"
        )
        errors.append(ctx.line(("mapping", "client_info"), expected, mapping.client_info))
    return errors


def _check_transport_options(stream: str, options: Mapping[str, Any], ctx: _ErrorContext) -> list[str]:
    """Errors of ``[sink.transport]`` against the ``Options`` model the stream's transport declares."""
    from shardline.plugins import registered

    factory = registered("transports").get(stream.partition("://")[0].lower())
    model = transport_options_model(factory)
    if model is None:
        return []
    ctx.hidden.update(("sink", "transport", k) for k in options if _looks_secret(k))
    try:
        model.model_validate(dict(options))
    except ValidationError as exc:
        return ctx.format(exc, model, prefix=("sink", "transport"))
    return []


def transport_options_model(factory: Any) -> type[BaseModel] | None:
    """The options model a transport factory declares (its ``Options`` attribute), or None."""
    model = getattr(factory, "Options", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


# --------------------------------------------------------------------------- the Python API's options


@dataclass(frozen=True)
class CheckedSinkOptions:
    """The sink options :func:`check_sink_options` validated (``create`` as a dict, limits in units)."""

    create: dict[str, int] | None
    limits: LimitsOptions
    backoff_base_s: float = 0.05
    backoff_max_s: float = 5.0


def check_sink_options(
    *,
    create: Any,
    ordering: Any,
    data: Any,
    partitioner: Any,
    limits: Mapping[str, Any],
    backoff: Mapping[str, Any] | None = None,
    mapping: Mapping[str, Any] | None = None,
    origin: str = "StreamSink",
) -> CheckedSinkOptions:
    """Validate the dict-shaped and enumerated options of StreamSink/AsyncStreamSink as the config does.

    ``create`` with :class:`CreateOptions`, ``ordering`` with :data:`Ordering`, ``limits``
    (``max_in_flight_bytes`` ...) with :class:`LimitsOptions`, ``backoff`` (``backoff_base_s``,
    ``backoff_max_s``: numbers > 0), ``data`` and ``partitioner`` against the built-in and
    registered names, ``mapping`` (the column options: ``partition_key``, ``data_column``,
    ``data_template``, ``client_info``, ``shard_id``, ``columns``) as ``[mapping]`` is, with the
    same rules (``data="raw"`` needs ``data_column``, ...). Raises :class:`ConfigError`, one line
    naming every bad option, e.g.
    ``StreamSink: create.shard: unknown key (expected one of: retention_hours, shards)``.
    """
    ctx = _ErrorContext(origin, set(), set())
    errors: list[str] = []
    backoff = dict(backoff or {})
    created: dict[str, int] | None = None
    if create is not None:
        if not isinstance(create, Mapping):
            errors.append(
                ctx.line(("create",), "expected a dict like {'shards': 4, 'retention_hours': 24}", create)
            )
        else:
            try:
                created = CreateOptions.model_validate(dict(create)).model_dump()
            except ValidationError as exc:
                errors.extend(ctx.format(exc, CreateOptions, prefix=("create",)))
    checked_limits = LimitsOptions.model_validate({})
    try:
        checked_limits = LimitsOptions.model_validate(dict(limits))
    except ValidationError as exc:
        errors.extend(ctx.format(exc, LimitsOptions))
    api = _ApiOnlyModel.model_validate({})
    try:
        api = _ApiOnlyModel.model_validate({"ordering": ordering, **backoff})
    except ValidationError as exc:
        errors.extend(ctx.format(exc, _ApiOnlyModel))
    errors.extend(_check_name("codecs", data, ("data",), ctx))
    errors.extend(_check_name("partitioners", partitioner, ("partitioner",), ctx))
    columns = dict(mapping or {})
    try:
        _ApiMappingModel.model_validate(columns)
    except ValidationError as exc:
        errors.extend(ctx.format(exc, _ApiMappingModel))
    if data == "raw" and not columns.get("data_column"):
        errors.append(f'{origin}: data "raw" needs data_column="<binary or string column>"')
    if data == "template" and not columns.get("data_template"):
        errors.append(f'{origin}: data "template" needs data_template="<text with {{column}} fields>"')
    if errors:
        raise ConfigError("; ".join(errors))
    return CheckedSinkOptions(created, checked_limits, api.backoff_base_s, api.backoff_max_s)


def check_transport_options(
    stream: str, factory: Any, options: Mapping[str, Any] | None, origin: str = "StreamSink"
) -> dict[str, Any]:
    """Validate ``transport_options`` against the factory's ``Options`` model (when it declares one).

    Returns the options to call the factory with (the given keys, as the model read them). Values
    of keys that look secret (``access_key``, ``*password*``, ``*token*``, ``*secret*``) are never
    shown. Raises :class:`ConfigError`: ``StreamSink: transport_options.timeout: expected a number > 0``.
    """
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"{origin}: transport_options: expected a dict of options, got {_kind(options)}")
    options = dict(options or {})
    model = transport_options_model(factory)
    if model is None:
        return options
    hidden: set[tuple[str | int, ...]] = {("transport_options", k) for k in options if _looks_secret(k)}
    ctx = _ErrorContext(origin, set(), set(), hidden)
    try:
        validated = model.model_validate(options)
    except ValidationError as exc:
        scheme = stream.partition("://")[0]
        lines = ctx.format(exc, model, prefix=("transport_options",))
        raise ConfigError(f"{'; '.join(lines)} (options of the {scheme}:// transport)") from None
    return validated.model_dump(include=set(options))


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered == "access_key" or any(w in lowered for w in ("password", "secret", "token"))


class _ApiMappingModel(StrictModel):
    """The column options of StreamSink (``[mapping]`` in a config, ``template`` named ``data_template``)."""

    partition_key: str | None = Field(None, min_length=1)
    data_column: str | None = Field(None, min_length=1)
    data_template: str | None = Field(None, min_length=1)
    client_info: str | None = Field(None, min_length=1)
    shard_id: str | None = Field(None, min_length=1)
    columns: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, json_schema_extra={"expected": "a non-empty list of column names"}
    )


class _ApiOnlyModel(StrictModel):
    """Options of StreamSink that a config sets elsewhere (ordering) or not at all (backoff)."""

    ordering: Ordering = "strict"
    backoff_base_s: Float = Field(0.05, gt=0)
    backoff_max_s: Float = Field(5.0, gt=0)


def _check_name(kind: str, value: Any, loc: tuple[str, ...], ctx: _ErrorContext) -> list[str]:
    from shardline import partitioning, records
    from shardline.plugins import registered

    builtin = records.BUILTIN_CODECS if kind == "codecs" else partitioning.BUILTIN_PARTITIONERS
    names = sorted(set(builtin) | set(registered(kind)))
    if value not in names:
        return [ctx.line(loc, f"expected one of {_choices(names)}", value)]
    return []


def _check_names(mapping: MappingConfig, ctx: _ErrorContext) -> list[str]:
    return [
        *_check_name("codecs", mapping.data, ("mapping", "data"), ctx),
        *_check_name("partitioners", mapping.partitioner, ("mapping", "partitioner"), ctx),
    ]


# --------------------------------------------------------------------------- error messages


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool | int | float | str) or value is None:
        return json.dumps(value)
    return repr(value)


def _choices(names: Iterable[str]) -> str:
    return ", ".join(json.dumps(n) for n in names)


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
    if origin is Annotated:
        return _strip_optional(typing.get_args(annotation)[0])
    return annotation


def _field_at(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The pydantic FieldInfo at ``loc`` inside ``model``, or None."""
    current: Any = model
    info = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or not isinstance(part, str):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _strip_optional(info.annotation)
    return info


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    if not loc:
        return model
    info = _field_at(model, loc)
    if info is None:
        return None
    inner = _strip_optional(info.annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def describe_field(info: Any) -> str | None:
    """What a field expects, in words: ``an integer >= 1``, ``one of "a", "b"``, ``a string``."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    annotation = _strip_optional(info.annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + _choices(str(a) for a in typing.get_args(annotation))
    base = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(annotation)
    if base is None:
        if (
            annotation in (dict,)
            or origin is dict
            or (isinstance(annotation, type) and issubclass(annotation, BaseModel))
        ):
            return "a table"
        if origin in (list, tuple, Sequence) or annotation in (list, tuple):
            return "a list"
        return None
    bounds = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
        if isinstance(meta, annotated_types.MinLen) and base == "a string" and meta.min_length >= 1:
            base = "a non-empty string"
    return base + (" " + " and ".join(bounds) if bounds else "")


_TYPE_ERRORS = (
    "int_", "float_", "string_", "bool_", "greater_", "less_", "finite_", "multiple_of",
    "too_short", "too_long", "dict_type", "model_type", "model_attributes_type", "list_type",
    "none_required",
)  # fmt: skip


@dataclass
class _ErrorContext:
    origin: str
    from_env: set[tuple[str | int, ...]]
    overridden: set[tuple[str, ...]]
    hidden: set[tuple[str | int, ...]] = field(default_factory=set)  # secrets: never echo their value

    def line(self, loc: Sequence[str | int], expectation: str, value: Any = ..., *, show: bool = True) -> str:
        loc = tuple(loc)
        if any(loc[: len(p)] == p for p in self.overridden):
            text = f"--set {_dotted(loc)}: {expectation}"
        else:
            text = f"{self.origin}: {_dotted(loc)}: {expectation}"
        if value is not ... and show:
            if loc in self.hidden:
                text += " (value not shown)"
            elif loc in self.from_env:
                text += ", got a value from the environment"
            else:
                text += f", got {_show(value)}"
        return text

    def format(self, exc: ValidationError, model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
        lines: list[str] = []
        seen: set[tuple[str | int, ...]] = set()
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper()))
            full = (*prefix, *loc)
            if full in seen:  # one message per key (unions report once per member)
                continue
            seen.add(full)
            kind = err["type"]
            if kind == "missing":
                lines.append(self.line(full, "missing required key"))
            elif kind == "extra_forbidden":
                parent = _model_at(model, loc[:-1])
                allowed = sorted(parent.model_fields) if parent is not None else []
                if prefix == ("source",) and not loc[:-1]:
                    allowed = sorted(["type", *allowed])
                hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
                lines.append(self.line(full, f"unknown key{hint}"))
            elif kind == "literal_error":
                lines.append(self.line(full, f"expected {err['ctx']['expected']}", err["input"]))
            elif kind.startswith(_TYPE_ERRORS):
                info = _field_at(model, loc)
                expected = describe_field(info) if info is not None else None
                if expected is None:
                    expected = err["msg"][0].lower() + err["msg"][1:]
                    expected = expected.replace("input should be", "expected")
                else:
                    expected = f"expected {expected}"
                lines.append(self.line(full, expected, err["input"]))
            elif kind == "value_error":
                message = str(err["msg"]).removeprefix("Value error, ")
                lines.append(self.line(full, message))
            else:
                lines.append(self.line(full, str(err["msg"]), err.get("input", ...)))
        return lines
