"""Every analysis command on a fleet dataset (S3 on loopback, and a folder) answers what it answers on the
same logs read locally; `--replica` narrows to replicas; `chain` reads a small part of the dataset."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcptrace.logs import load, lookup, ship
from mcptrace.logs._objects import Objects
from mcptrace.testing import subprocess_env
from tests.fleet_logs import SPLIT_REQUEST, fleet_logs
from tests.s3_server import S3Server, s3_server  # noqa: F401

COMMANDS = [
    ["stats"],
    ["stats", "--by", "method"],
    ["stats", "--by", "caller"],
    ["stats", "--by", "service"],
    ["stats", "--every", "1m"],
    ["errors"],
    ["loops"],
    ["runs"],
    ["runs", "--loops"],
    ["sessions"],
    ["sessions", "--timeline"],
    ["incidents"],
]


class Fleet:
    def __init__(self, logs: dict[str, Path], url: str, folder: Path, env: dict[str, str]) -> None:
        self.logs, self.url, self.folder, self.env = logs, url, folder, env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mcptrace", *args, "--format", "json"],
            capture_output=True, text=True, timeout=120, env=subprocess_env(self.env),
        )

    def answer(self, *args: str) -> object:
        run = self.run(*args)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Fleet]:  # noqa: F811
    root = tmp_path_factory.mktemp("fleet")
    logs = fleet_logs(root / "logs")
    bucket = f"fleet-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    url = f"s3://{bucket}/prod"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        for replica, folder in logs.items():
            ship([folder], url, replica=replica)
            ship([folder], root / "dataset", replica=replica)
        yield Fleet(logs, url, root / "dataset", s3_server.env)


#: Columns only a fleet dataset has: which replica served a run, a session, an error's example.
REPLICA_COLUMNS = {"replicas", "example_replica"}


def without_replicas(answer: object) -> object:
    if isinstance(answer, list):
        return [without_replicas(a) for a in answer]
    if isinstance(answer, dict):
        return {k: without_replicas(v) for k, v in answer.items() if k not in REPLICA_COLUMNS}
    return answer


def replica_values(answer: object) -> set[str]:
    if isinstance(answer, list):
        return {v for a in answer for v in replica_values(a)}
    if isinstance(answer, dict):
        found = {v for k, v in answer.items() if k == "example_replica"}
        found |= {r for k, v in answer.items() if k == "replicas" for r in v}
        return found | {v for k, a in answer.items() if k not in REPLICA_COLUMNS for v in replica_values(a)}
    return set()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_answers_on_the_fleet_what_it_answers_locally(fleet: Fleet, command: list[str]) -> None:
    local = fleet.answer(*command, *map(str, fleet.logs.values()), "--no-index")
    assert local  # the sample logs give every command something to say
    assert replica_values(local) == set()
    for source in (fleet.url, str(fleet.folder)):
        answer = fleet.answer(*command, source)
        assert without_replicas(answer) == local
        if command in (["runs"], ["errors"], ["sessions"]):  # every replica served runs, sessions, failed calls
            assert replica_values(answer) == set(fleet.logs)


@pytest.mark.parametrize("command", [["stats"], ["errors"], ["sessions"]], ids=" ".join)
def test_replica_keeps_only_that_replicas_rows(fleet: Fleet, command: list[str]) -> None:
    local = fleet.answer(*command, str(fleet.logs["web-2"]), "--no-index")
    assert without_replicas(fleet.answer(*command, fleet.url, "--replica", "web-2")) == local
    assert without_replicas(fleet.answer(*command, fleet.url, "--replica", "web-1")) != local


def test_the_frame_has_the_replica_of_every_row(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fleet.env.items():
        monkeypatch.setenv(name, value)
    frame = load(fleet.url).frame.collect()
    counts = dict(frame.group_by("replica").len().iter_rows())
    assert counts == {r: load([p], use_index=False).frame.collect().height for r, p in fleet.logs.items()}


def test_chain_finds_a_request_reading_a_small_part_of_the_dataset(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fleet.env.items():
        monkeypatch.setenv(name, value)
    local = load([*fleet.logs.values()], use_index=False).frame.collect()
    ids = local.get_column("mcp_request_id").drop_nulls().unique().sort().to_list()
    for request_id in [ids[0], ids[len(ids) // 2], ids[-1]]:
        expected = lookup([*fleet.logs.values()], value=request_id, use_index=False).records
        found = lookup(fleet.url, value=request_id)
        assert [{k: v for k, v in r.items() if k != "replica"} for r in found.records] == expected
        assert {r["replica"] for r in found.records} <= set(fleet.logs)
        assert 0 < found.bytes_searched < found.bytes_total
    split = lookup(fleet.url, value=SPLIT_REQUEST).records
    assert sorted((r["event"], r["replica"]) for r in split) == [("downstream_call", "web-3"), ("tool_call", "web-1")]
    assert [{k: v for k, v in r.items() if k != "replica"} for r in split] == lookup(
        [*fleet.logs.values()], value=SPLIT_REQUEST, use_index=False
    ).records
    run = fleet.run("chain", ids[0], fleet.url)
    assert run.returncode == 0 and "read " in run.stderr and " MB of " in run.stderr
    assert json.loads(run.stdout)[0]["replica"] in fleet.logs
    missing = fleet.run("chain", "req-not-there", fleet.url)
    assert missing.returncode != 0 and "fleet dataset" in missing.stderr


def test_a_shipment_without_its_seal_is_not_read(fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    ship([fleet.logs["web-3"]], folder, replica="web-3")
    before = fleet.answer("stats", str(folder))
    seal = next(folder.rglob("seal.json"))
    seal.unlink()  # a shipment cut short before its seal was written
    objects = Objects(folder).list("")
    assert any(k.endswith(".parquet") for k in objects)
    assert fleet.answer("stats", str(folder)) == [] != before


def test_report_draws_the_same_figures_from_the_fleet(fleet: Fleet, tmp_path: Path) -> None:
    def html(*sources: str) -> str:
        out = tmp_path / f"{len(sources)}.html"
        run = subprocess.run(
            [sys.executable, "-m", "mcptrace", "report", *sources, "-o", str(out)],
            capture_output=True, text=True, timeout=300, env=subprocess_env(fleet.env),
        )
        assert run.returncode == 0, run.stderr
        # Only where the logs came from may differ.
        return re.sub(r"log lines from [^<]*", "log lines from ...", out.read_text())

    assert html(fleet.url) == html(*map(str, fleet.logs.values()))
    assert html(fleet.url, "--replica", "web-2") == html(str(fleet.logs["web-2"]))
