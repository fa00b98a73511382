"""No client can grow the metrics: made-up tool and method names are counted under `_unknown`."""

from __future__ import annotations

import random
import string
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcptrace.testing import initialize_message, running_server
from tests.helpers import UNLIMITED

pytestmark = pytest.mark.slow

NAMES = 10_000


def series(base_url: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))) for family in text_string_to_metric_families(text)
            for s in family.samples}


def made_up(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "_-./", k=rng.randint(1, 40)))


def test_ten_thousand_made_up_tool_names_leave_the_series_unchanged(tmp_path: Path) -> None:
    rng = random.Random(17)
    with running_server(tmp_path, *UNLIMITED) as srv:

        async def main() -> tuple[int, int]:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=8)) as http:
                headers = {"accept": "application/json"}
                r = await http.post(srv.url, json=initialize_message("inventor"), headers=headers)
                headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
                await http.post(srv.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                headers=headers)

                ids = iter(range(1, 1_000_000))

                async def call(method: str, params: dict[str, object] | None = None) -> int:
                    body = {"jsonrpc": "2.0", "id": next(ids), "method": method,
                            **({"params": params} if params else {})}
                    return (await http.post(srv.url, json=body, headers=headers)).status_code

                for tool in ("ping", "no-such-tool"):  # the series a known and an unknown tool make
                    await call("tools/call", {"name": tool, "arguments": {}})
                await call("no/such-method")
                before = series(srv.base_url)
                names = [made_up(rng) for _ in range(NAMES)]
                methods = [made_up(rng) for _ in range(200)]
                statuses: list[int] = []

                async def worker(share: list[str], methods: list[str]) -> None:
                    for name in share:
                        statuses.append(await call("tools/call", {"name": name, "arguments": {}}))
                    for method in methods:
                        statuses.append(await call(method))

                with anyio.fail_after(600):
                    async with anyio.create_task_group() as tg:
                        for i in range(8):
                            tg.start_soon(worker, names[i::8], methods[i::8])
                after = series(srv.base_url)
                assert len(statuses) == NAMES + 200 and set(statuses) <= {200}
                assert after == before, sorted(after - before)[:5]
                return len(before), len(after)

        counted, _ = anyio.run(main)
    assert counted > 0
