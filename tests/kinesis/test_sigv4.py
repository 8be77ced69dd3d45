"""The client's SigV4 signer gives exactly the headers botocore's ``SigV4Auth`` gives for the same
request, time and credentials: every endpoint form, with and without a session token, empty and
binary bodies, and across a date change (the cached signing key)."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from botocore import auth as botocore_auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from shardline_kinesis.sigv4 import SigV4Signer, host_header

ENDPOINTS = [
    "http://127.0.0.1:4567/",
    "https://kinesis.eu-west-1.amazonaws.com/",
    "https://kinesis.eu-west-1.amazonaws.com:443/",
    "http://Kinesis.Example.COM:80/",
    "http://[::1]:4567/",
    "https://vpce-0a1b.kinesis.eu-west-1.vpce.amazonaws.com:8443/some/path/",
    "http://127.0.0.1:4567/a%20b/./c/../?b=2&a=1",
]
TIMES = [
    dt.datetime(2026, 12, 3, 23, 59, 59, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 4, 0, 0, 1, tzinfo=dt.UTC),
    dt.datetime(2027, 1, 1, 12, 30, 0, tzinfo=dt.UTC),
]
BODIES = [b"", b'{"StreamName":"s","Records":[]}', os.urandom(70_000)]


def _botocore_headers(
    monkeypatch: pytest.MonkeyPatch,
    creds: Credentials,
    url: str,
    headers: dict[str, str],
    body: bytes,
    now: dt.datetime,
) -> dict[str, str]:
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(creds.get_frozen_credentials(), "kinesis", "eu-west-1").add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////wEaDOTOKEN+/=="])
def test_headers_equal_botocores_sigv4auth(
    monkeypatch: pytest.MonkeyPatch, url: str, token: str | None
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    signer = SigV4Signer(url, "eu-west-1", "kinesis")
    for op in ("PutRecords", "ListShards"):
        given = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"Kinesis_20131202.{op}"}
        for now in TIMES:  # in this order: the signing key is cached per date, then changes
            for body in BODIES:
                ours = signer.headers(creds.get_frozen_credentials(), given, body, now)
                assert ours == _botocore_headers(monkeypatch, creds, url, given, body, now)
                assert ("X-Amz-Security-Token" in ours) == (token is not None)


def test_a_new_secret_the_same_day_gets_a_new_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:4567/"
    signer = SigV4Signer(url, "eu-west-1", "kinesis")
    given = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.PutRecords"}
    now = TIMES[0]
    signatures = set()
    for secret in ("first-secret", "rotated-secret"):
        creds = Credentials("AKIDEXAMPLE", secret)
        ours = signer.headers(creds.get_frozen_credentials(), given, b"{}", now)
        assert ours == _botocore_headers(monkeypatch, creds, url, given, b"{}", now)
        signatures.add(ours["Authorization"])
    assert len(signatures) == 2


def test_the_signed_host_is_what_botocore_derives_from_the_url() -> None:
    for url in ENDPOINTS:
        assert host_header(url) == botocore_auth._host_from_url(url)
