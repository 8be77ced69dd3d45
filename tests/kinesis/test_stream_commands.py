"""``shardline stream create|describe|update|put|get|delete`` on kinesis:// URLs (the one ``stream``
group; the URL's scheme picks the Kinesis access), against the emulators."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result
from shardline_v3io.__main__ import main


def _cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def _lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_stream_commands_round_trip_on_kinesalite(kinesalite: Any) -> None:
    url = kinesalite.stream_url(kinesalite.unique_name("cli"))
    created = _cli("stream", "create", url, "--shards", "2")
    assert created.exit_code == 0, created.output
    assert _cli("stream", "create", url, "--shards", "2").exit_code != 0
    assert _cli("stream", "create", url, "--shards", "2", "--if-not-exists").exit_code == 0

    (described,) = _lines(_cli("stream", "describe", url))
    assert described["shards"] == 2
    assert [s["shard_id"] for s in described["open_shards"]] == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]
    assert described["open_shards"][1]["ending_hash_key"] == str(2**128 - 1)

    put = _cli("stream", "put", url, "--key", "user-7", "-v", stdin="a\nb\nc\n")
    assert put.exit_code == 0, put.output
    sequences = [line["sequence"] for line in _lines(put)]
    assert len(sequences) == 3 and all(isinstance(s, str) and int(s) > 0 for s in sequences)
    assert _cli("stream", "put", url, "x", "y", "--shard", "0").exit_code == 0

    got = _lines(_cli("stream", "get", url))
    assert sorted(r["data"] for r in got) == ["a", "b", "c", "x", "y"]
    assert [r["data"] for r in got if r["partition_key"] == "user-7"] == ["a", "b", "c"]
    assert {r["shard"] for r in got if r["data"] in ("x", "y")} == {0}
    assert len(_lines(_cli("stream", "get", url, "--shard", "0", "--limit", "1"))) == 1
    missing_shard = _cli("stream", "get", url, "--shard", "9")
    assert missing_shard.exit_code != 0 and "shards 0..1" in missing_shard.output

    assert _cli("stream", "delete", url).exit_code == 0
    assert _cli("stream", "delete", url, "--missing-ok").exit_code == 0
    gone = _cli("stream", "get", url)
    assert gone.exit_code != 0 and "does not exist" in gone.output


def test_get_reads_closed_parents_and_their_children(kinesalite: Any) -> None:
    from shardline_kinesis.streamtools import split_every_shard

    name = kinesalite.unique_name("cli-split")
    url = kinesalite.stream_url(name)
    assert _cli("stream", "create", url, "--shards", "1").exit_code == 0
    assert _cli("stream", "put", url, "--key", "k", "before").exit_code == 0
    split_every_shard(kinesalite.client(), name)
    assert _cli("stream", "put", url, "--key", "k", "after").exit_code == 0
    got = _lines(_cli("stream", "get", url))
    assert [r["data"] for r in got] == ["before", "after"]
    assert got[0]["shard"] == 0 and got[1]["shard"] in (1, 2)


def test_update_reshards_on_kinesis_local(kinesis_local: Any) -> None:
    url = kinesis_local.stream_url(kinesis_local.unique_name("cli-up"))
    assert _cli("stream", "create", url, "--shards", "1").exit_code == 0
    updated = _cli("stream", "update", url, "--shards", "2")
    assert updated.exit_code == 0, updated.output
    (described,) = _lines(_cli("stream", "describe", url))
    assert described["shards"] == 2 and len(described["open_shards"]) == 2
