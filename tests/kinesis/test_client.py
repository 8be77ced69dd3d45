"""The Kinesis client over real HTTP, against a local aiohttp app that checks what it receives:
SigV4 signatures, targets, pagination, and how each error answer becomes an exception."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from shardline.errors import AccessDeniedError, ShardlineError, StreamNotFoundError
from shardline_kinesis.client import KinesisClient, KinesisError, KinesisKMSError, KinesisThrottledError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRET"
Handler = Callable[[web.Request, bytes], web.Response | Any]


class App:
    """An aiohttp app on 127.0.0.1 that answers each call with ``handler`` and keeps the requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        answer = self.handler(request, body)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[App, str]]:
    """The app on a free port of 127.0.0.1: ``(app, url)``."""
    app = App(handler)
    server = web.Application()
    server.router.add_post("/", app.__call__)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield app, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def run(coro: Any) -> Any:
    """Run one test's coroutine (the suite has no asyncio plugin)."""
    return asyncio.run(coro)


def _client(endpoint: str, **kw: Any) -> KinesisClient:
    kw.setdefault("credentials", Credentials("AKIDTEST", SECRET))
    return KinesisClient(region="eu-west-1", endpoint_url=endpoint, **kw)


def _error(status: int, type_: str, message: str = "it failed") -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"__type": type_, "message": message}))


def _expected_signature(headers: dict[str, str], body: bytes, url: str) -> str:
    """The signature botocore computes for these bytes at the request's own X-Amz-Date."""
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    request = AWSRequest(
        method="POST", url=url, data=body, headers={k: v for k, v in headers.items() if k.lower() in signed}
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials("AKIDTEST", SECRET), "kinesis", "eu-west-1")
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)


def test_calls_are_sigv4_signed_over_the_exact_body() -> None:
    body = b'{"StreamName":"s","Records":[]}'

    async def main() -> tuple[App, str]:
        async with serve(lambda r, b: web.Response(body=b'{"FailedRecordCount":0,"Records":[]}')) as (
            app,
            url,
        ):
            client = _client(url)
            await client.put_records_body(body, "s")
            await client.close()
            return app, url

    app, url = run(main())
    headers, received = app.requests[0]
    assert received == body
    assert headers["X-Amz-Target"] == "Kinesis_20131202.PutRecords"
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    auth = headers["Authorization"]
    scope = f"{headers['X-Amz-Date'][:8]}/eu-west-1/kinesis/aws4_request"
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential=AKIDTEST/{scope}")
    assert "x-amz-target" in auth.split("SignedHeaders=")[1]
    assert auth.rsplit("Signature=", 1)[1] == _expected_signature(headers, received, url + "/")
    assert SECRET not in str(headers)


def _shard(i: int, closed: bool = False) -> dict[str, Any]:
    rng = {"StartingSequenceNumber": "1", **({"EndingSequenceNumber": "9"} if closed else {})}
    keys = {"StartingHashKey": str(i), "EndingHashKey": str(i)}
    return {"ShardId": f"shardId-{i:012d}", "HashKeyRange": keys, "SequenceNumberRange": rng}


def test_list_shards_follows_next_token_without_the_stream_name() -> None:
    def handler(request: web.Request, body: bytes) -> web.Response:
        if "NextToken" in orjson.loads(body):
            open_with_null = _shard(2)
            open_with_null["SequenceNumberRange"]["EndingSequenceNumber"] = None  # as kinesis-mock says
            return web.json_response({"Shards": [open_with_null]})
        return web.json_response({"Shards": [_shard(0, closed=True), _shard(1)], "NextToken": "page-2"})

    async def main() -> tuple[App, list[Any]]:
        async with serve(handler) as (app, url):
            client = _client(url)
            shards = await client.list_shards("s")
            await client.close()
            return app, shards

    app, shards = run(main())
    assert [(s.shard_id, s.open) for s in shards] == [
        ("shardId-000000000000", False),
        ("shardId-000000000001", True),
        ("shardId-000000000002", True),
    ]
    assert orjson.loads(app.requests[0][1]) == {"StreamName": "s"}
    assert orjson.loads(app.requests[1][1]) == {"NextToken": "page-2"}


async def _describe_error(handler: Handler, release: asyncio.Event | None = None, **kw: Any) -> Exception:
    async with serve(handler) as (_, url):
        client = _client(url, **kw)
        try:
            await client.describe_stream_summary("orders-stream")
        except Exception as exc:
            return exc
        finally:
            await client.close()
            if release is not None:  # let a held answer finish before the app stops
                release.set()
    raise AssertionError("the call did not fail")


@pytest.mark.parametrize(
    ("status", "type_", "cls", "retryable"),
    [
        (400, "com.amazonaws.kinesis.v20131202#ResourceNotFoundException", StreamNotFoundError, False),
        (400, "UnrecognizedClientException", AccessDeniedError, False),
        (403, "InvalidSignatureException", AccessDeniedError, False),
        (400, "ExpiredTokenException", AccessDeniedError, False),
        (400, "AccessDeniedException", AccessDeniedError, False),
        (400, "KMSDisabledException", KinesisKMSError, False),
        (400, "KMSAccessDeniedException", KinesisKMSError, False),
        (400, "ProvisionedThroughputExceededException", KinesisThrottledError, True),
        (400, "LimitExceededException", KinesisThrottledError, True),
        (429, "", KinesisThrottledError, True),
        (500, "InternalFailure", KinesisError, True),
        (503, "ServiceUnavailable", KinesisError, True),
        (400, "ValidationException", KinesisError, False),
    ],
)
def test_error_answers_become_shardline_errors(
    status: int, type_: str, cls: type[Exception], retryable: bool
) -> None:
    exc = run(_describe_error(lambda r, b: _error(status, type_, "details from the server")))
    assert isinstance(exc, cls) and isinstance(exc, ShardlineError)
    assert exc.retryable is retryable  # type: ignore[attr-defined]
    if not isinstance(exc, AccessDeniedError | StreamNotFoundError):  # those carry their own status
        assert exc.status == status  # type: ignore[attr-defined]
    assert "orders-stream" in str(exc) and "details from the server" in str(exc)
    assert SECRET not in str(exc) and "AKIDTEST" not in str(exc)


def test_access_denied_says_where_credentials_come_from() -> None:
    exc = run(
        _describe_error(lambda r, b: _error(400, "UnrecognizedClientException", "The token is invalid"))
    )
    assert isinstance(exc, AccessDeniedError)
    assert "AWS_PROFILE" in str(exc) and "region" in str(exc)


def test_a_call_that_gets_no_answer_times_out_as_retryable() -> None:
    async def main() -> Exception:
        never = asyncio.Event()

        async def handler(request: web.Request, body: bytes) -> web.Response:
            await never.wait()
            return web.Response()

        return await _describe_error(handler, release=never, timeout_s=0.3)

    exc = run(main())
    assert isinstance(exc, KinesisError) and exc.name == "Timeout" and exc.retryable


def test_an_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    from shardline_kinesis.emulators import free_port

    async def main() -> Exception:
        client = _client(f"http://127.0.0.1:{free_port()}")
        try:
            await client.describe_stream_summary("s")
        except Exception as exc:
            return exc
        finally:
            await client.close()
        raise AssertionError("the call did not fail")

    exc = run(main())
    assert isinstance(exc, KinesisError) and exc.name == "ConnectionError" and exc.retryable


def test_expired_credentials_are_refreshed() -> None:
    issued: list[str] = []

    def refresh() -> dict[str, str]:
        key = f"AKIDGEN{len(issued)}"
        issued.append(key)
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)  # inside the refresh window
        return {"access_key": key, "secret_key": SECRET, "token": "t", "expiry_time": expiry.isoformat()}

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")

    async def main() -> App:
        async with serve(lambda r, b: web.json_response({"StreamDescriptionSummary": {}})) as (app, url):
            client = _client(url, credentials=creds)
            await client.describe_stream_summary("s")
            await client.describe_stream_summary("s")
            await client.close()
            return app

    app = run(main())
    used = [h["Authorization"].split("Credential=")[1].split("/")[0] for h, _ in app.requests]
    assert len(issued) >= 3 and used[-1] == issued[-1] and "AKIDGEN0" not in used


def test_no_credentials_anywhere_is_a_config_error_saying_where_to_put_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from shardline.errors import ConfigError
    from shardline_kinesis.emulators import AWS_ENV_TO_CLEAR

    for name in (*AWS_ENV_TO_CLEAR, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    async def main() -> None:
        client = KinesisClient(region="eu-west-1", endpoint_url="http://127.0.0.1:9")
        try:
            await client.describe_stream_summary("s")
        finally:
            await client.close()

    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-000000000000"}]}',
        b'{"FailedRecordCount":1,"Records":[{"ErrorCode":"InternalFailure","ErrorMessage":"x"}]}',
    ],
)
def test_an_answer_that_does_not_account_for_every_record_is_retried_whole(
    answer: bytes, shardline_kinesis_env: None
) -> None:
    from shardline_kinesis.transport import KinesisTransport

    async def main() -> Exception:
        async with serve(lambda r, b: web.Response(body=answer)) as (_, url):
            t = KinesisTransport(f"kinesis://s?region=eu-west-1&endpoint_url={url}")
            try:
                await t.put_records_body(t.wire.body([b'{"Data":"","PartitionKey":"a"},'] * 2), 2)
            except Exception as exc:
                return exc
            finally:
                await t.close()
        raise AssertionError("two records sent, one answered: not an error")

    exc = run(main())
    assert isinstance(exc, KinesisError) and exc.retryable and exc.name == "InvalidResponse"


def test_shard_ids_of_an_answer_include_a_shard_the_last_describe_did_not_list(
    shardline_kinesis_env: None,
) -> None:
    from shardline_kinesis.transport import KinesisTransport

    entry = b'{"SequenceNumber":"1","ShardId":"shardId-00000000000%d"}'
    answer = b'{"FailedRecordCount":0,"Records":[' + b",".join([entry % 0, entry % 0, entry % 3]) + b"]}"

    async def main() -> tuple[frozenset[str] | None, frozenset[str] | None]:
        async with serve(lambda r, b: web.Response(body=answer)) as (_, url):
            t = KinesisTransport(f"kinesis://s?region=eu-west-1&endpoint_url={url}")
            body = t.wire.body([b'{"Data":"","PartitionKey":"a"},'] * 3)
            try:
                unknown = (await t.put_records_body(body, 3)).shard_ids
                t._needles = (("shardId-000000000000", b'"ShardId":"shardId-000000000000"'),)
                t._next_shard_read = 0.0  # read the next answer's ShardIds too (not only every 0.5 s)
                known = (await t.put_records_body(body, 3)).shard_ids
                return unknown, known
            finally:
                await t.close()

    unknown, known = run(main())
    assert unknown == known == {"shardId-000000000000", "shardId-000000000003"}


def test_shard_ids_of_all_written_answers_are_read_at_most_every_half_second(
    shardline_kinesis_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading an answer's ShardIds costs a pass over it per shard: between reads, an all-written
    answer is only checked to list every record (and reports no ShardIds); a short one still fails."""
    import shardline_kinesis.transport as transport
    from shardline_kinesis.client import KinesisError
    from shardline_kinesis.transport import KinesisTransport

    assert transport.SHARD_READ_EVERY_S <= 1.0
    monkeypatch.setattr(transport, "SHARD_READ_EVERY_S", 3600.0)  # a slow machine cannot pass it
    entry = b'{"SequenceNumber":"1","ShardId":"shardId-000000000003"}'
    answers = [b'{"FailedRecordCount":0,"Records":[' + b",".join([entry] * n) + b"]}" for n in (2, 2, 1)]

    async def main() -> tuple[list[frozenset[str] | None], Exception | None]:
        async with serve(lambda r, b: web.Response(body=answers.pop(0))) as (_, url):
            t = KinesisTransport(f"kinesis://s?region=eu-west-1&endpoint_url={url}")
            body = t.wire.body([b'{"Data":"","PartitionKey":"a"},'] * 2)
            try:
                seen = [(await t.put_records_body(body, 2)).shard_ids for _ in range(2)]
                try:
                    await t.put_records_body(body, 2)
                except KinesisError as exc:
                    return seen, exc
                return seen, None
            finally:
                await t.close()

    seen, error = run(main())
    assert seen == [{"shardId-000000000003"}, None]
    assert isinstance(error, KinesisError) and error.name == "InvalidResponse"


def test_waits_for_a_stream_poll_again_and_give_up_at_their_deadline(shardline_kinesis_env: None) -> None:
    """A stream that stays CREATING, and open shards that never cover the hash-key space (a reshard
    that does not finish): both waits ask again and again, then end with a retryable error that
    says what they waited for; neither waits for ever."""
    from shardline_kinesis.transport import KinesisTransport

    summary = {"StreamDescriptionSummary": {"StreamStatus": "CREATING", "RetentionPeriodHours": 24}}
    half = {  # one open shard over the lower half of the hash-key space only
        "Shards": [
            {
                "ShardId": "shardId-000000000000",
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**127 - 1)},
                "SequenceNumberRange": {"StartingSequenceNumber": "1"},
            }
        ]
    }

    def answer(request: web.Request, body: bytes) -> web.Response:
        op = request.headers["X-Amz-Target"].rsplit(".", 1)[1]
        return web.json_response(half if op == "ListShards" else summary)

    async def main() -> tuple[Exception, Exception, int]:
        async with serve(answer) as (app, url):
            client = KinesisClient(region="eu-west-1", endpoint_url=url)
            t = KinesisTransport(f"kinesis://s?region=eu-west-1&endpoint_url={url}", create_timeout_s=0.3)
            try:
                with pytest.raises(KinesisError) as active:
                    await client.wait_active("s", timeout_s=0.3)
                with pytest.raises(KinesisError) as covered:
                    await t.describe()
                return active.value, covered.value, len(app.requests)
            finally:
                await client.close()
                await t.close()

    active, covered, requests = run(main())
    assert active.retryable and active.name == "Timeout" and "still CREATING after 0.3 s" in str(active)
    assert covered.retryable and covered.name == "ResourceInUseException"
    assert "do not cover the hash-key space after 0.3 s" in str(covered)
    assert requests >= 6  # each wait asked more than once before giving up
