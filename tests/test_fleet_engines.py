"""docs/fleet.md's SQL, as written there, answers in DuckDB and in Spark what mcptrace answers.

A fleet of three replicas (the sample incidents' real server log, and two generated logs of
several days) is shipped into a dataset folder; every `fleet-sql` block of the page is run in
both engines over it and compared with `mcptrace stats` and `mcptrace chain` on the same logs.
Counts and error rates must be equal; percentiles agree to 1e-6 ms: mcptrace rounds them to the
nanosecond, and the last bits of a linear interpolation depend on the order of the arithmetic.
Spark runs `local[2]` on loopback (SPARK_LOCAL_IP) and needs Java: without a `java` on the path the
Spark half is skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from bench.loggen import generate
from mcptrace import _fields as f
from mcptrace.analysis import tool_stats
from mcptrace.logs import load, ship

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "fleet.md"
SAMPLE = ROOT / "sample_logs" / "incidents" / "mcptrace.log"
#: The location the page's queries name, replaced here by the test's dataset.
DOC_DATASET = "s3://mcptrace-logs/fleet"
DOC_REQUEST_ID = "req-36eabfad243ca3ba"
#: mcptrace's percentiles are rounded to the nanosecond (`DECIMALS`): agreement is to that.
PERCENTILE_TOLERANCE_MS = 1e-6
STATS_COLUMNS = ["calls", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"]


def doc_queries() -> dict[tuple[str, str], str]:
    """(engine, name) -> SQL of every `<!-- fleet-sql: ENGINE NAME -->` block of docs/fleet.md."""
    found = re.findall(r"<!-- fleet-sql: (\w+) (\w+) -->\n```sql\n(.*?)```", DOC.read_text(), flags=re.S)
    return {(engine, name): sql.strip().rstrip(";") for engine, name, sql in found}


QUERIES = doc_queries()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """A dataset folder of three replicas, their log folders, and a request id to look up."""
    work = tmp_path_factory.mktemp("fleet")
    logs = work / "logs"
    for name in ("r1", "r2", "r3"):
        (logs / name).mkdir(parents=True)
    shutil.copy(SAMPLE, logs / "r1" / "mcptrace.log")
    facts = generate(logs / "r2" / "mcptrace.log", size_bytes=3_000_000, seed=11, start=1_795_000_000.0)
    generate(logs / "r3" / "mcptrace.log", size_bytes=2_000_000, seed=12, start=1_795_100_000.0)
    dest = work / "dataset"
    for name in ("r1", "r2", "r3"):
        ship([logs / name], dest, replica=name)
    request_id = str(facts["failed_ids"][0])  # type: ignore[index]
    yield dest, logs, request_id


def local_fleet(logs: Path) -> pl.LazyFrame:
    """What mcptrace reads from the replicas' own log folders, each row named by its replica."""
    return pl.concat([
        load([folder], use_index=False).frame.with_columns(pl.lit(folder.name).alias("replica"))
        for folder in sorted(logs.iterdir())
    ], how="diagonal_relaxed")


def reference_stats(logs: Path, *, by: list[str]) -> pl.DataFrame:
    return tool_stats(local_fleet(logs), by=by).collect()


def reference_chain(logs: Path, request_id: str) -> list[tuple[Any, ...]]:
    frame = local_fleet(logs).filter(pl.col(f.REQUEST_ID) == request_id).collect()
    return sorted(
        (row[f.TIMESTAMP], row["replica"], row[f.EVENT], row[f.DURATION_MS]) for row in frame.iter_rows(named=True)
    )


def assert_same_stats(engine: pl.DataFrame, ours: pl.DataFrame, keys: list[str], columns: list[str]) -> None:
    ours = ours.filter(pl.col("calls") > 0).sort(keys)
    engine = engine.sort(keys)
    assert engine.select(keys).rows() == ours.select(keys).rows()
    for column in columns:
        theirs, mine = engine[column].to_list(), ours[column].to_list()
        if column.startswith("p"):
            assert all(abs(a - b) <= PERCENTILE_TOLERANCE_MS for a, b in zip(theirs, mine, strict=True)), column
        else:
            assert theirs == pytest.approx(mine, rel=1e-12, abs=0), column


def sql(engine: str, name: str, dest: Path, request_id: str) -> str:
    text = QUERIES[(engine, name)]
    return text.replace(DOC_DATASET, str(dest)).replace(DOC_REQUEST_ID, request_id)


def test_the_page_has_each_query_for_both_engines() -> None:
    names = {"tool_stats", "replica_errors", "chain"}
    assert {(e, n) for e in ("duckdb", "spark") for n in names} <= set(QUERIES)
    assert ("duckdb", "view") in QUERIES


def test_duckdb_answers_what_mcptrace_answers(fleet: tuple[Path, Path, str]) -> None:
    import duckdb

    dest, logs, request_id = fleet
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(sql("duckdb", "view", dest, request_id))

    def run(name: str) -> pl.DataFrame:
        return pl.from_arrow(con.sql(sql("duckdb", name, dest, request_id)).to_arrow_table())  # type: ignore[return-value]

    stats = run("tool_stats")
    assert_same_stats(stats, reference_stats(logs, by=[f.TOOL_NAME]), [f.TOOL_NAME], STATS_COLUMNS)
    per_replica = run("replica_errors")
    assert per_replica["replica"].unique().sort().to_list() == ["r1", "r2", "r3"]
    assert_same_stats(per_replica, reference_stats(logs, by=["replica", f.TOOL_NAME]), ["replica", f.TOOL_NAME],
                      ["calls", "errors", "error_rate"])
    chain = run("chain")
    assert chain.height >= 1
    got = sorted(zip(chain["timestamp"], chain["replica"], chain["event"], chain["duration_ms"], strict=True))
    assert got == reference_chain(logs, request_id)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java: apt-get install openjdk-17-jre-headless (scripts/test.sh does)")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]").appName("mcptrace-fleet-test")
        .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1").config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_answers_what_mcptrace_answers(fleet: tuple[Path, Path, str], spark: Any) -> None:
    dest, logs, request_id = fleet
    spark.read.parquet(str(dest)).createOrReplaceTempView("fleet")

    def run(name: str) -> pl.DataFrame:
        return pl.from_arrow(spark.sql(sql("spark", name, dest, request_id)).toArrow())  # type: ignore[return-value]

    assert_same_stats(run("tool_stats"), reference_stats(logs, by=[f.TOOL_NAME]), [f.TOOL_NAME], STATS_COLUMNS)
    assert_same_stats(run("replica_errors"), reference_stats(logs, by=["replica", f.TOOL_NAME]),
                      ["replica", f.TOOL_NAME], ["calls", "errors", "error_rate"])
    chain = run("chain")
    got = sorted(zip(chain["timestamp"], chain["replica"], chain["event"], chain["duration_ms"], strict=True))
    assert got == reference_chain(logs, request_id)
