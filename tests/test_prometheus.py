"""The Grafana dashboard and the alert rules against a real Prometheus scraping a real server.

Debian's `prometheus` starts on 127.0.0.1 with a temporary configuration: it
scrapes `mcptrace serve` (bearer tokens on, a session cap of 3, a tight limit
on `get_config`) every second and evaluates `deploy/prometheus/alerts.yml` every
second. The rules are loaded as shipped except that every `for:` is shortened to
1 s, so that an outage of seconds fires its alert; the thresholds and windows
are untouched. Official SDK clients then play a scripted workload: several
callers, both protocol eras, a tool that does not exist, a loop, a flood that
gets refused and suspended, a bad token, one session past the cap, and an
upstream outage planted with `POST /admin/faults {"down": true}`. Beside it,
`mcptrace probe` checks an address where nothing listens and serves its metrics
(`OTEL_METRICS_EXPORTER=prometheus`) to the same Prometheus.

While the upstream is down the breaker and error-rate alerts must fire, and the
probe's alert too; then
every query of every panel of `deploy/grafana/mcptrace.json` (template variables
substituted) must return data through Prometheus' HTTP API. Grafana itself is
not installable here, so the dashboard's structure is checked as JSON. All of it
runs in well under a minute and stops every process it started.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp.shared.exceptions import MCPError

from mcptrace.guards._tokens import TokenStore
from mcptrace.testing import RunningProcess, running_server, running_upstream, stop_process, subprocess_env
from tests.guard_clients import client
from tests.promql import RULES, declared_prometheus_names, metrics_read_by
from tests.proxies import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "mcptrace.json"
PROMETHEUS = shutil.which("prometheus")
JOB = "mcptrace"
#: The template variables as Grafana would fill them in for this test's one server.
VARIABLES = {
    "job": JOB, "instance": ".*", "tool": ".*", "__rate_interval": "1m", "__range": "5m", "__interval": "15s",
}
SESSION_CAP = 3
SERVER_ENV = {
    "MCPTRACE_MAX_SESSIONS": str(SESSION_CAP),
    "MCPTRACE_RATE_LIMIT_TOOLS": "get_config=1/3,*=500/1000",
    "MCPTRACE_SUSPEND_AFTER": "10",
}
OUTAGE_ALERTS = {("MCPBreakerOpen", "upstream"), ("MCPToolErrorRateHigh", "fetch_upstream")}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def substituted(expr: str) -> str:
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], expr)
    assert "$" not in out, out
    return out


# -- the dashboard as JSON --------------------------------------------------------------------------

def test_the_dashboard_is_an_importable_grafana_dashboard_with_a_prometheus_input() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39  # Grafana 11 and later
    assert board["uid"] and board["title"] and board["id"] is None
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"job", "instance", "tool"}
    used = {name for p in panels() for t in p["targets"] for name in re.findall(r"\$\{?(\w+)", t["expr"])}
    assert used <= set(VARIABLES)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_every_panel_has_a_title_a_datasource_a_unit_and_queries_of_declared_metrics() -> None:
    declared = declared_prometheus_names()
    seen: set[str] = set()
    for panel in panels():
        title = panel["title"]
        assert title and panel.get("description"), panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], title
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", title
            read = metrics_read_by(target["expr"])
            assert read and read <= declared, f"{title}: {sorted(read - declared)}"
            seen |= read
    # the panels people expect, by the metrics behind them
    assert {
        "mcptrace_caller_tool_calls_total", "mcp_tool_calls_total", "mcp_tool_duration_seconds",
        "mcp_server_operation_duration_seconds", "mcp_active_sessions", "mcptrace_max_sessions",
        "mcptrace_requests_refused_total", "mcptrace_breaker_state", "mcptrace_telemetry_dropped_total",
        "mcptrace_loop_suspected_calls_total",
    } <= seen


# -- a real Prometheus ------------------------------------------------------------------------------

@contextmanager
def running_prometheus(workdir: Path, targets: dict[str, str], rules: Path) -> Iterator[str]:
    """Debian's prometheus on a free loopback port, scraping `targets` (job: address) and evaluating
    `rules` every second."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (scripts/test.sh installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                           for job, address in targets.items()],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(workdir / "prometheus.stderr", "wb") as err:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(workdir / 'prometheus.stderr').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, timeout=15)


@contextmanager
def running_probe(workdir: Path, url: str) -> Iterator[str]:
    """`mcptrace probe URL` every half second, its metrics served for Prometheus; yields their address."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = subprocess_env({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                          "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    with open(workdir / "probe.stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcptrace", "probe", url, "--every", "0.5", "--count", "200", "--timeout", "2"],
            stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True,
        )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=15)


def rules_with_short_durations(workdir: Path) -> Path:
    """The shipped rules with every `for:` set to 1 s (nothing else changed), for an outage of seconds."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    path = workdir / "alerts.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class PromQL:
    def __init__(self, url: str) -> None:
        self.url = url

    async def query(self, http: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
        response = await http.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def scraped(self, http: httpx.AsyncClient, expr: str) -> None:
        """Once a scrape has brought `expr` a sample (Prometheus scrapes a new target a few seconds in)."""
        while not await self.query(http, expr):
            await anyio.sleep(0.2)

    async def firing(self, http: httpx.AsyncClient) -> set[tuple[str, str]]:
        """(alert name, what it is about: the service, tool or URL) of every firing alert."""
        alerts = (await http.get(f"{self.url}/api/v1/alerts")).json()["data"]["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("service") or a["labels"].get("tool")
                 or a["labels"].get("url", "")) for a in alerts if a["state"] == "firing"}


def finite(result: list[dict[str, Any]]) -> bool:
    """Whether an instant query returned at least one number (a ratio of nothing is NaN, not data)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


# -- the scripted workload --------------------------------------------------------------------------

async def quietly(call: Any) -> None:
    """A call the workload expects to be refused or to fail: it counts on the server, not here."""
    try:
        await call
    except (MCPError, httpx.HTTPError, RuntimeError, OSError, ExceptionGroup):
        pass


async def hold_session(url: str, token: str, name: str, opened: anyio.Event, done: anyio.Event) -> None:
    """A handshake-era session that stays open and keeps working until `done`."""
    async with client(url, token, mode="legacy", name=name) as c:
        opened.set()
        while not done.is_set():
            await c.call_tool("search_database", {"query": "anvil", "limit": 3})
            await c.call_tool("ping", {})
            with anyio.move_on_after(0.3):
                await done.wait()


async def workload(server: RunningProcess, upstream: RunningProcess, tokens: dict[str, str], prom: PromQL,
                   http: httpx.AsyncClient) -> set[tuple[str, str]]:
    """Everything the panels show, then the outage until its alerts fire; returns the alerts that fired."""
    url = server.url
    done = anyio.Event()
    async with anyio.create_task_group() as holders:
        opened = [anyio.Event(), anyio.Event()]
        holders.start_soon(hold_session, url, tokens["agent-search"], "search-ui", opened[0], done)
        holders.start_soon(hold_session, url, tokens["agent-support"], "support-bot", opened[1], done)
        for event in opened:
            await event.wait()
        # The first tool call started every tool's counters at 0: once Prometheus has them, what
        # follows is an increase rate() sees, however short (a series born with a count hides it).
        await prom.scraped(http, 'mcptrace_loop_suspected_calls_total{tool="search_database"}')
        # both eras, a tool that does not exist, broken arguments
        async with client(url, tokens["agent-flaky"], mode="2026-07-28", name="flaky") as c:
            for _ in range(3):
                await c.call_tool("delete_everything", {})
                await c.call_tool("search_database", {"query": "anvil", "limit": "ten"})
                await c.call_tool("get_config", {"key": "limits"})
        # a loop: one identical call, answered the same way, 30 times in a row
        async with client(url, tokens["agent-looper"], mode="2026-07-28", name="looper") as c:
            for _ in range(30):
                await c.call_tool("search_database", {"query": "refund policy", "limit": 5})
        # a flood over get_config's limit (1/s, burst 3): rate limited, then suspended
        async with client(url, tokens["agent-flooder"], mode="2026-07-28", name="flooder") as c:
            for _ in range(25):
                await quietly(c.call_tool("get_config", {"key": "limits"}))
        # a token that does not exist
        for _ in range(3):
            response = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                       headers={"authorization": "Bearer mct_not-a-token"})
            assert response.status_code == 401
        # the third session reaches the cap; a fourth is refused at it
        async with client(url, tokens["agent-reports"], mode="legacy", name="reports") as c:
            await c.call_tool("ping", {})
            await quietly(_one_more_session(url, tokens["agent-reports"]))

        # the outage: the upstream goes down while an integrator keeps calling through it
        async with client(url, tokens["agent-integrator"], mode="2026-07-28", name="integrator") as c:
            for n in range(3):
                assert not (await c.call_tool("fetch_upstream", {"key": f"order-{n}"})).is_error
            await http.post(f"{upstream.base_url}/admin/faults", json={"down": True})
            try:
                while True:
                    await c.call_tool("fetch_upstream", {"key": "order-9"})
                    fired = await prom.firing(http)
                    if fired >= OUTAGE_ALERTS and any(name == "MCPProbeFailing" for name, _ in fired):
                        break
                    await anyio.sleep(0.25)  # the integrator's pace, not a wait for anything
            finally:
                await http.post(f"{upstream.base_url}/admin/faults", json={"down": False})
        done.set()
    return fired


async def _one_more_session(url: str, token: str) -> None:
    async with client(url, token, mode="legacy", name="one-too-many") as c:
        await c.call_tool("ping", {})


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    store_path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    store = TokenStore(store_path)
    callers = ["agent-search", "agent-support", "agent-flaky", "agent-looper", "agent-flooder", "agent-reports",
               "agent-integrator"]
    return store_path, {caller: store.add(caller, tenant="acme") for caller in callers}


def test_every_panel_returns_data_and_the_outage_alerts_fire_on_a_real_prometheus(
    tmp_path: Path, tokens: tuple[Path, dict[str, str]],
) -> None:
    store, by_caller = tokens
    with running_upstream(tmp_path / "upstream") as upstream, running_server(
        tmp_path / "server", "--tokens", str(store), "--upstream-url", upstream.base_url, env=SERVER_ENV,
    ) as server:
        rules = rules_with_short_durations(tmp_path)
        dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there: every probe fails
        with running_probe(tmp_path / "probe", dead) as probe, running_prometheus(
            tmp_path / "prometheus", {JOB: server.base_url.removeprefix("http://"), "mcptrace-probe": probe}, rules,
        ) as prom_url:
            prom = PromQL(prom_url)
            step = ["the first scrape"]

            async def main() -> tuple[set[tuple[str, str]], dict[tuple[str, str], list[dict[str, Any]]]]:
                with anyio.fail_after(60):
                    async with httpx.AsyncClient(timeout=10) as http:
                        await prom.scraped(http, f'up{{job="{JOB}"}} == 1')
                        step[0] = "the workload and the outage alerts"
                        fired = await workload(server, upstream, by_caller, prom, http)
                        results = {}
                        for panel in panels():
                            for target in panel["targets"]:
                                expr = substituted(target["expr"])
                                step[0] = f"data for {panel['title']!r}: {expr}"
                                # the last scrape may still be on its way: ask again until it has landed
                                while not finite(result := await prom.query(http, expr)):
                                    await anyio.sleep(0.2)
                                results[(panel["title"], target["refId"])] = result
                        return fired, results

            try:
                fired, results = anyio.run(main)
            except TimeoutError:
                pytest.fail(f"still waiting for {step[0]} after 60 s")

    assert fired >= OUTAGE_ALERTS
    assert ("MCPProbeFailing", dead) in fired
    by_title = {title: result for (title, ref), result in results.items() if ref == "A"}
    # what the workload did is what the panels show
    callers = {s["metric"]["caller"] for s in by_title["Tool calls per client"]}
    assert {"agent-search", "agent-support", "agent-flaky", "agent-looper", "agent-integrator"} <= callers
    versions = {s["metric"]["mcp_protocol_version"] for s in by_title["Protocol versions"]}
    assert {"2025-11-25", "2026-07-28"} <= versions
    tools = {s["metric"]["tool"] for s in by_title["Tool calls per tool"]}
    assert "_unknown" in tools and "delete_everything" not in tools
    refused = {s["metric"]["reason"]: float(s["value"][1]) for s in by_title["Refusals by reason"]}
    assert all(refused[reason] > 0 for reason in ("unauthenticated", "rate_limited", "suspended", "session_cap"))
    loops = {s["metric"]["tool"]: float(s["value"][1]) for s in by_title["Suspected agent loops"]}
    assert loops["search_database"] > 0 and loops["ping"] == 0
