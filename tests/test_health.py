"""/health tells the truth about dependencies, and breakers shield the server during an outage."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from mcptrace.testing import RunningProcess, running_server
from tests.guard_clients import client
from tests.helpers import assert_contract, read_log, wait_for_log

BREAKER_ENV = {
    "MCPTRACE_BREAKER_MIN_CALLS": "3",
    "MCPTRACE_BREAKER_COOLDOWN": "3",
    "MCPTRACE_HEALTH_CACHE_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: RunningProcess) -> Iterator[RunningProcess]:
    with running_server(
        tmp_path_factory.mktemp("health"), "--upstream-url", upstream.base_url, env=BREAKER_ENV
    ) as proc:
        yield proc


def health(server: RunningProcess) -> httpx.Response:
    return httpx.get(f"{server.base_url}/health", timeout=10)


def health_until(
    server: RunningProcess, status: str, timeout: float = 5.0, *, breaker: str | None = None,
) -> httpx.Response:
    """Poll /health (bounded) until it reports `status` (and, if named, lists `breaker`'s state).

    Its answers are cached for a second, so a change shows after a moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        r = health(server)
        body = r.json()
        listed = breaker is None or breaker in body["checks"].get("breakers", {}).get("states", {})
        if (body["status"] == status and listed) or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def set_faults(upstream: RunningProcess, **faults: Any) -> None:
    httpx.post(f"{upstream.base_url}/admin/faults", json=faults, timeout=10).raise_for_status()


def test_a_healthy_server_reports_every_check_with_its_latency(served: RunningProcess) -> None:
    r = health_until(served, "healthy")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "healthy"
    assert set(body["checks"]) == {"sqlite", "upstream", "log_sink", "breakers"}
    for name in ("sqlite", "upstream", "log_sink"):
        assert body["checks"][name]["status"] == "healthy"
        assert body["checks"][name]["latency_ms"] >= 0
    assert body["version"] and body["uptime_seconds"] >= 0
    assert httpx.get(f"{served.base_url}/livez", timeout=10).json() == {"status": "alive"}


def test_an_upstream_outage_opens_the_breaker_degrades_health_and_both_recover(
    served: RunningProcess,
    upstream: RunningProcess,
) -> None:
    set_faults(upstream, down=True)
    try:
        degraded = health_until(served, "degraded")
        assert degraded.status_code == 200
        assert degraded.json()["checks"]["upstream"]["status"] == "unhealthy"
        assert "503" in degraded.json()["checks"]["upstream"]["error"]

        async def during_outage() -> list[str]:
            with anyio.fail_after(30):
                async with client(served.url, None, name="outage") as c:
                    texts = []
                    for i in range(5):
                        result = await c.call_tool("fetch_upstream", {"key": f"k{i}"})
                        assert result.is_error
                        texts.append(result.content[0].text)  # type: ignore[union-attr]
                    return texts

        errors = anyio.run(during_outage)
        assert all("HTTP 503" in e for e in errors[:3])
        assert "circuit open" in errors[3]  # refused at once: the upstream is spared
        states = health_until(served, "degraded", breaker="upstream").json()["checks"]["breakers"]
        assert states["states"]["upstream"] in ("open", "half_open")
    finally:
        set_faults(upstream, down=False)

    async def after_recovery() -> None:
        with anyio.fail_after(30):
            async with client(served.url, None, name="recovered") as c:
                while True:  # the breaker lets a trial through once its cooldown (3 s) is over
                    result = await c.call_tool("fetch_upstream", {"key": "again"})
                    if not result.is_error:
                        return
                    await anyio.sleep(0.2)

    anyio.run(after_recovery)
    healthy = health_until(served, "healthy")
    assert healthy.json()["status"] == "healthy"
    assert healthy.json()["checks"]["breakers"]["states"]["upstream"] == "closed"
    changes = wait_for_log(served.log_file, lambda r: r["event"] == "breaker_state_changed", count=3)
    assert [(r["service"], r["breaker_state"]) for r in changes][:3] == [
        ("upstream", "open"),
        ("upstream", "half_open"),
        ("upstream", "closed"),
    ]
    assert_contract(read_log(served.log_file))


def test_a_missing_database_makes_the_server_unhealthy_with_503_until_it_is_back(
    served: RunningProcess,
) -> None:
    db = served.workdir / "mcptrace.sqlite3"
    aside = db.with_name("aside.sqlite3")
    shutil.move(db, aside)
    try:
        r = health_until(served, "unhealthy")
        assert r.status_code == 503
        assert "missing" in r.json()["checks"]["sqlite"]["error"]
    finally:
        shutil.move(aside, db)
    assert health_until(served, "healthy").status_code == 200


def test_answers_are_cached_briefly_so_probes_are_cheap(tmp_path, upstream: RunningProcess) -> None:  # type: ignore[no-untyped-def]
    with running_server(
        tmp_path, "--upstream-url", upstream.base_url, env={"MCPTRACE_HEALTH_CACHE_SECONDS": "30"}
    ) as srv:
        first = health(srv).json()
        set_faults(upstream, down=True)
        try:
            again = health(srv).json()
        finally:
            set_faults(upstream, down=False)
        assert again["checks"] == first["checks"]  # the same run of the checks, not a new one
        assert again["status"] == "healthy"
