"""Auth on every request: bearer tokens and JWTs, 401s that clients understand, tenants kept apart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from mcptrace.testing import RunningProcess, running_server, subprocess_env
from tests.guard_clients import add_token, client, revoke
from tests.helpers import assert_contract, read_log, wait_for_log
from tests.jwt_keys import AUDIENCE, ISSUER, Issuer


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tokens") / "tokens.json"


@pytest.fixture(scope="module")
def tokens(store: Path) -> dict[str, str]:
    return {
        "acme": add_token(store, "agent-acme", "acme"),
        "globex": add_token(store, "agent-globex", "globex"),
        "pinger": add_token(store, "agent-pinger", "acme", "ping"),
    }


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, store: Path, tokens: dict[str, str]
) -> Iterator[RunningProcess]:
    with running_server(tmp_path_factory.mktemp("guarded"), "--tokens", str(store)) as proc:
        yield proc


def post(url: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(url, json=body, headers={"accept": "application/json", **headers}, timeout=10)


PING = {"jsonrpc": "2.0", "id": 7, "method": "ping"}


class TestRefusals:
    def test_a_request_without_a_token_gets_401_with_a_bearer_challenge_and_a_jsonrpc_error(
        self,
        guarded: RunningProcess,
    ) -> None:
        r = post(guarded.url, PING)
        assert r.status_code == 401
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{guarded.base_url}/.well-known/oauth-protected-resource"' in challenge
        assert r.json()["error"]["code"] == -32001
        assert r.json()["jsonrpc"] == "2.0"

    def test_a_bad_token_is_recorded_as_refused_with_the_request_id_and_never_the_token(
        self,
        guarded: RunningProcess,
    ) -> None:
        secret = "mct_this-is-not-a-real-token-0123456789"
        r = post(guarded.url, PING, authorization=f"Bearer {secret}")
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.headers["connection"] == "close"
        request_id = r.headers["x-request-id"]
        records = wait_for_log(
            guarded.log_file,
            lambda rec: rec.get("mcp_request_id") == request_id and rec["event"] == "request_refused",
        )
        assert len(records) == 1
        assert {k: records[0].get(k) for k in ("status", "refusal_reason", "http_status", "client_address")} == {
            "status": "refused", "refusal_reason": "unauthenticated", "http_status": 401,
            "client_address": "127.0.0.1",
        }
        assert records[0]["level"] == "warning" and records[0]["error"] == "invalid or revoked token"
        assert secret not in guarded.log_file.read_text()
        assert_contract(read_log(guarded.log_file))

    def test_the_protected_resource_metadata_names_this_resource(self, guarded: RunningProcess) -> None:
        doc = httpx.get(f"{guarded.base_url}/.well-known/oauth-protected-resource", timeout=10).json()
        assert doc["resource"] == guarded.url
        assert doc["bearer_methods_supported"] == ["header"]

    def test_probes_stay_open_without_a_token(self, guarded: RunningProcess) -> None:
        assert httpx.get(f"{guarded.base_url}/livez", timeout=10).status_code == 200
        assert httpx.get(f"{guarded.base_url}/health", timeout=10).status_code == 200


def test_the_official_client_works_with_a_token_and_every_line_names_the_caller(
    guarded: RunningProcess,
    tokens: dict[str, str],
) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with client(guarded.url, tokens["acme"], mode="legacy") as c:
                assert (await c.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]
            async with client(guarded.url, tokens["acme"], mode="auto") as c:
                assert (await c.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]

    anyio.run(main)
    calls = wait_for_log(
        guarded.log_file, lambda r: r["event"] == "tool_call" and r.get("caller_id") == "agent-acme", count=2
    )
    assert len(calls) >= 2 and {c["tenant"] for c in calls} == {"acme"}


def test_no_tenant_reads_another_tenants_rows(guarded: RunningProcess, tokens: dict[str, str]) -> None:
    async def rows(token: str) -> list[dict[str, object]]:
        async with client(guarded.url, token) as c:
            result = await c.call_tool("search_database", {"query": "", "limit": 50})
            assert result.structured_content is not None
            return result.structured_content["rows"]  # type: ignore[no-any-return]

    async def main() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        with anyio.fail_after(30):
            return await rows(tokens["acme"]), await rows(tokens["globex"])

    acme, globex = anyio.run(main)
    assert acme and globex
    assert {r["tenant"] for r in acme} == {"acme"}
    assert {r["tenant"] for r in globex} == {"globex"}
    assert not {r["id"] for r in acme} & {r["id"] for r in globex}


def test_a_token_limited_to_some_tools_is_refused_the_others(
    guarded: RunningProcess, tokens: dict[str, str]
) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with client(guarded.url, tokens["pinger"]) as c:
                assert [t.name for t in (await c.list_tools()).tools] == ["ping"]
                assert (await c.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]
                with pytest.raises(MCPError) as refused:
                    await c.call_tool("search_database", {"query": "anvil"})
                assert refused.value.code == -32003
                assert "search_database" in refused.value.message

    anyio.run(main)


def test_a_revoked_token_fails_on_the_next_request_of_an_open_session(
    guarded: RunningProcess,
    store: Path,
) -> None:
    token = add_token(store, "agent-leaver", "initech")

    async def main() -> None:
        with anyio.fail_after(30):
            async with client(guarded.url, token) as c:
                assert not (await c.call_tool("search_database", {"query": "anvil"})).is_error
                revoke(store, "agent-leaver")
                with pytest.raises(MCPError) as refused:  # the very next request: no reload interval to wait
                    await c.call_tool("ping", {})
                assert refused.value.code == -32001

    anyio.run(main)


class TestJwt:
    @pytest.fixture(scope="class")
    def issuer(self) -> Issuer:
        return Issuer()

    @pytest.fixture(scope="class")
    def server(self, tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[RunningProcess]:
        workdir = tmp_path_factory.mktemp("jwt")
        jwks = issuer.write_jwks(workdir / "jwks.json")
        with running_server(workdir, "--jwks", str(jwks), "--issuer", ISSUER, "--audience", AUDIENCE) as proc:
            yield proc

    def test_a_valid_access_token_works_with_the_official_client(
        self, server: RunningProcess, issuer: Issuer
    ) -> None:
        async def main() -> None:
            with anyio.fail_after(30):
                async with client(server.url, issuer.token(sub="svc-7", tenant="globex")) as c:
                    result = await c.call_tool("search_database", {"query": "", "limit": 5})
                    assert result.structured_content is not None
                    assert {r["tenant"] for r in result.structured_content["rows"]} == {"globex"}

        anyio.run(main)

    @pytest.mark.parametrize(
        ("claims", "reason"),
        [
            ({"ttl": -30}, "token expired"),
            ({"aud": "https://other.test"}, "wrong audience"),
            ({"iss": "https://evil.test"}, "wrong issuer"),
        ],
    )
    def test_expired_or_misdirected_tokens_get_401(
        self,
        server: RunningProcess,
        issuer: Issuer,
        claims: dict[str, object],
        reason: str,
    ) -> None:
        r = post(server.url, PING, authorization=f"Bearer {issuer.token(**claims)}")  # type: ignore[arg-type]
        assert r.status_code == 401
        assert reason in r.headers["www-authenticate"]

    def test_a_token_signed_by_someone_else_gets_401(self, server: RunningProcess) -> None:
        r = post(server.url, PING, authorization=f"Bearer {Issuer().token()}")
        assert r.status_code == 401 and "bad signature" in r.headers["www-authenticate"]

    def test_the_metadata_points_at_the_issuer(self, server: RunningProcess) -> None:
        doc = httpx.get(f"{server.base_url}/.well-known/oauth-protected-resource", timeout=10).json()
        assert doc["authorization_servers"] == [ISSUER]


class TestTopology:
    def test_loopback_without_auth_starts_with_a_warning(self, tmp_path: Path) -> None:
        with running_server(tmp_path) as proc:
            assert "WARNING: no authentication" in proc.stderr()
        assert any(r["event"] == "auth_disabled" for r in read_log(proc.log_file))

    def test_a_non_loopback_bind_without_auth_refuses_to_start_even_with_the_override(
        self, tmp_path: Path
    ) -> None:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mcptrace",
                "serve",
                "--host",
                "0.0.0.0",
                "--allow-non-loopback",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=30,
        )
        assert out.returncode != 0
        assert "without authentication" in out.stderr
        assert "Traceback" not in out.stderr

    def test_stdio_needs_no_auth_and_warns_about_nothing(self, tmp_path: Path) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "mcptrace", "serve", "--stdio", "--data-dir", str(tmp_path)],
            input="",
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=30,
        )
        assert "WARNING" not in out.stderr


def test_token_list_shows_callers_and_never_tokens(store: Path, tokens: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mcptrace", "token", "list", "--store", str(store)],
        capture_output=True, text=True, env=subprocess_env(), timeout=30, check=True,
    ).stdout
    assert "agent-acme" in out and "agent-pinger" in out and "ping" in out
    assert not any(token in out for token in tokens.values())
    assert not any(token in store.read_text() for token in tokens.values())
