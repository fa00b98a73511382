"""A session belongs to whoever opened it, and one principal cannot take every session.

Tried as an attacker with one valid token would: Bob's token on Alice's session
id, for every request that names a session (POST, the GET stream, DELETE) and
on both protocol eras. Without auth, a second client declaring the same name
from another address (127.0.0.2: another host on the loopback network).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcptrace.guards._tokens import TokenStore, credential_key, token_hash
from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.helpers import assert_contract, eventually, read_log, wait_for_log
from tests.jwt_keys import AUDIENCE, ISSUER, Issuer

NOT_FOUND = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
PING = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ping", "arguments": {}}}
JSON = "application/json"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
    return store.path, {"alice": store.add("alice", tenant="acme"), "bob": store.add("bob", tenant="globex"),
                        "carol": store.add("carol", tenant="initech")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tokens: tuple[Path, dict[str, str]]) -> Iterator[RunningProcess]:
    with running_server(tmp_path_factory.mktemp("owned"), "--tokens", str(tokens[0]),
                        env={"MCPTRACE_MAX_SESSIONS": "50"}) as proc:
        yield proc


def principal(token: str) -> str:
    return credential_key(token_hash(token))


def open_session(http: httpx.Client, url: str, token: str | None, name: str = "client") -> dict[str, str]:
    headers = {"accept": JSON, **({"authorization": f"Bearer {token}"} if token else {})}
    r = http.post(url, json=initialize_message(name), headers=headers)
    assert r.status_code == 200, r.text
    headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    assert http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                     headers=headers).status_code == 202
    return headers


def named(session: dict[str, str], token: str, **extra: str) -> dict[str, str]:
    """Headers naming `session` with another token (and more headers)."""
    return {**session, "authorization": f"Bearer {token}", **extra}


def attempts(http: httpx.Client, url: str, headers: dict[str, str]) -> dict[str, httpx.Response]:
    """Every request that names a session: a call, the GET stream, a 2026-07-28 call, a DELETE (last)."""
    modern = {**headers, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "ping"}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    return {
        "POST": http.post(url, json=PING, headers=headers),
        "GET": http.get(url, headers={**headers, "accept": "text/event-stream"}),
        "POST 2026-07-28": http.post(url, headers=modern, json={
            **PING, "params": {"name": "ping", "arguments": {}, "_meta": meta}}),
        "DELETE": http.delete(url, headers=headers),
    }


def test_another_principal_on_a_session_is_answered_as_if_it_did_not_exist_and_touches_nothing(
    server: RunningProcess, tokens: tuple[Path, dict[str, str]]
) -> None:
    alice, bob = tokens[1]["alice"], tokens[1]["bob"]
    with httpx.Client(timeout=10) as http:
        session = open_session(http, server.url, alice, "alice-agent")
        hijacks = attempts(http, server.url, named(session, bob))
        absent = attempts(http, server.url, named(session, bob, **{"mcp-session-id": "f" * 32}))
        for what, response in hijacks.items():
            assert (response.status_code, response.json()) == (404, NOT_FOUND), what
            assert (absent[what].status_code, absent[what].json()) == (404, NOT_FOUND), what
        # Alice's session is untouched: her GET stream opens, her calls are served, her DELETE ends it.
        with http.stream("GET", server.url, headers={**session, "accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
        call = http.post(server.url, json=PING, headers=session)
        assert call.status_code == 200 and call.json()["result"]["content"][0]["text"] == "pong"
        assert http.delete(server.url, headers=session).status_code == 200
        assert http.post(server.url, json=PING, headers=session).status_code == 404
    refused = {r.headers["x-request-id"] for r in hijacks.values()}

    def each_recorded_once() -> list[dict[str, Any]]:
        httpx.get(f"{server.base_url}/health", timeout=10)
        lines = [r for r in read_log(server.log_file) if r["event"] == "request_refused"
                 and r.get("session_owner") is not None]
        assert sum(int(r.get("count", 1)) for r in lines) == len(hijacks)  # type: ignore[call-overload]
        return lines  # type: ignore[return-value]

    lines = eventually(each_recorded_once, timeout=10)
    first = lines[0]
    assert first["mcp_request_id"] in refused and first["level"] == "warning"
    assert {k: first[k] for k in ("status", "refusal_reason", "http_status", "caller_id", "tenant", "principal",
                                  "session_owner", "session_id")} == {
        "status": "refused", "refusal_reason": "forbidden", "http_status": 404, "caller_id": "bob",
        "tenant": "globex", "principal": principal(bob), "session_owner": principal(alice),
        "session_id": session["mcp-session-id"],
    }
    records = read_log(server.log_file)
    text = server.log_file.read_text()
    assert alice not in text and bob not in text, "principals are logged as ids, never as tokens"
    in_session = [r for r in records if r.get("session_id") == session["mcp-session-id"]
                  and r["event"] in ("request_received", "tool_call", "response_sent")]
    assert in_session and {r["caller_id"] for r in in_session} == {"alice"}, "nothing of Bob's ran in it"
    assert not [r for r in records if r.get("mcp_request_id") in refused and r["event"] != "request_refused"]
    assert_contract(records)


def test_one_principal_cannot_take_every_session(
    server: RunningProcess, tokens: tuple[Path, dict[str, str]]
) -> None:
    """MCPTRACE_MAX_SESSIONS=50: a principal holds at most a quarter of it (12); the others still get theirs."""
    alice, carol = tokens[1]["alice"], tokens[1]["carol"]
    with httpx.Client(timeout=10) as http:
        opened: list[dict[str, str]] = []
        refusal = None
        for _ in range(50):
            r = http.post(server.url, json=initialize_message("greedy"),
                          headers={"accept": JSON, "authorization": f"Bearer {alice}"})
            if r.status_code != 200:
                refusal = r
                break
            opened.append({"authorization": f"Bearer {alice}", "accept": JSON,
                           "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"})
        assert len(opened) == 12 and refusal is not None
        assert refusal.status_code == 429 and "mcp-session-id" not in refusal.headers
        assert int(refusal.headers["retry-after"]) >= 1
        error = refusal.json()["error"]
        assert error["code"] == -32000 and error["data"]["maxSessions"] == 12 and error["data"]["retryAfterMs"] > 0
        carols = [open_session(http, server.url, carol, "carol-agent") for _ in range(3)]  # the other tenant
        assert all(http.post(server.url, json=PING, headers=s).status_code == 200 for s in carols)
        assert http.delete(server.url, headers=opened.pop()).status_code == 200  # room again
        open_session(http, server.url, alice, "greedy")
        for s in [*opened, *carols]:
            http.delete(server.url, headers=s)
    [line] = wait_for_log(server.log_file, lambda r: r.get("mcp_request_id") == refusal.headers["x-request-id"])
    assert (line["event"], line["refusal_reason"], line["limit_scope"], line["http_status"]) == (
        "request_refused", "session_cap", "caller", 429)


def test_without_auth_a_name_is_not_enough_to_use_or_to_suspend_someone_elses_identity(tmp_path: Path) -> None:
    """The principal is the declared name at its address: an impostor at 127.0.0.2 is someone else."""
    args = ("--rate-limit-caller", "5/5", "--rate-limit-tools", "*=1000/1000", "--suspend-after", "3",
            "--suspend-seconds", "60")
    with running_server(tmp_path, *args) as srv, httpx.Client(timeout=10) as analyst, httpx.Client(
        timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    ) as impostor:
        real = open_session(analyst, srv.url, None, "analyst")
        stolen = impostor.post(srv.url, json=PING, headers=real)
        assert (stolen.status_code, stolen.json()) == (404, NOT_FOUND)
        fake = open_session(impostor, srv.url, None, "analyst")
        statuses = [impostor.post(srv.url, json=PING, headers=fake).status_code for _ in range(20)]
        assert statuses[-1] == 429
        assert impostor.post(srv.url, json=PING, headers=fake).json()["error"]["data"]["scope"] == "suspended"
        served = analyst.post(srv.url, json=PING, headers=real)
        assert served.status_code == 200, "the real analyst is not the one suspended"
        wait_for_log(srv.log_file, lambda r: r.get("refusal_reason") == "suspended")
        records = read_log(srv.log_file)
    owners = {r["session_owner"] for r in records if r.get("session_owner")}
    assert owners == {"analyst@127.0.0.1"}
    suspended = [r for r in records if r["event"] == "request_refused" and r["refusal_reason"] == "suspended"]
    assert suspended and {r["principal"] for r in suspended} == {"analyst@127.0.0.2"}
    assert {r["client_address"] for r in suspended} == {"127.0.0.2"}


def test_the_refusal_lines_say_who_asked_and_whose_it_was_and_nothing_else(server: RunningProcess) -> None:
    lines = [r for r in read_log(server.log_file) if r["event"] == "request_refused"]
    assert lines and all(json.dumps(r).count("mct_") == 0 for r in lines)


def test_with_jwts_a_session_belongs_to_the_subject_at_its_issuer(tmp_path: Path) -> None:
    """A refreshed token of the same subject keeps the session; another subject's token does not get it."""
    issuer = Issuer()
    jwks = issuer.write_jwks(tmp_path / "jwks.json")
    first, other = issuer.token(sub="agent-1", jti="a"), issuer.token(sub="agent-2", jti="b")
    refreshed = issuer.token(sub="agent-1", jti="c", ttl=600)
    with running_server(tmp_path / "server", "--jwks", str(jwks), "--issuer", ISSUER, "--audience",
                        AUDIENCE) as srv, httpx.Client(timeout=10) as http:
        session = open_session(http, srv.url, first, "jwt-agent")
        assert http.post(srv.url, json=PING, headers=named(session, refreshed)).status_code == 200
        stolen = http.post(srv.url, json=PING, headers=named(session, other))
        assert (stolen.status_code, stolen.json()) == (404, NOT_FOUND)
        [line] = wait_for_log(srv.log_file, lambda r: r.get("session_owner") is not None)
    assert (line["principal"], line["session_owner"]) == (f"jwt:{ISSUER}|agent-2", f"jwt:{ISSUER}|agent-1")
