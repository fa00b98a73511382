"""Bad bodies never hurt the server: random bytes, non-JSON-RPC JSON, broken envelopes and tool arguments.

Every case goes to the real `mcptrace serve` over HTTP. Each reply is checked
(no 5xx, nothing about the server's files, the JSON-RPC code a client can act
on), a normal request is answered right after, and at the end of each test
every refused request is found in the log exactly once, at warning level.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from mcptrace.testing import RunningProcess, running_server
from tests.abuse import INIT, JSONRPC_CODES, Session, assert_logged_once
from tests.helpers import UNLIMITED

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = "secret-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: RunningProcess) -> Iterator[RunningProcess]:
    """The real server with its rate limits out of the way: these cases are about input, not volume."""
    args = ("--upstream-url", upstream.base_url, *UNLIMITED)
    with running_server(tmp_path_factory.mktemp("abused"), *args) as proc:
        yield proc


@pytest.fixture(scope="module")
def session(server: RunningProcess) -> Iterator[Session]:
    for place in (server.workdir, server.workdir.parent):
        (place / "secret.txt").write_text(SECRET)
    s = Session.open(server)
    yield s
    s.close()
    assert "Traceback" not in server.stderr()


@pytest.fixture(scope="module")
def tools(session: Session) -> dict[str, dict[str, Any]]:
    status, body = session.call("tools/list")
    assert status == 200
    return {tool["name"]: tool["inputSchema"] for tool in body["result"]["tools"]}


@pytest.fixture(autouse=True)
def every_refusal_is_logged_once(request: pytest.FixtureRequest, server: RunningProcess) -> Iterator[None]:
    yield
    if "session" in request.fixturenames:
        s: Session = request.getfixturevalue("session")
        assert_logged_once(server, s.refused, s.answered)
        s.refused.clear()
        s.answered.clear()


def error_code(body: Any) -> int:
    return int(body["error"]["code"])


# -- bytes and JSON that are not JSON-RPC -----------------------------------------------------------------


@FAST
@given(st.binary(max_size=512))
def test_random_bytes_are_parse_errors_or_invalid_requests(session: Session, data: bytes) -> None:
    status, body = session.send(data)
    assert status == 400
    assert error_code(body) in (-32700, -32600)
    session.assert_still_serving()


VALID = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "search_database", "arguments": {"query": "anvil", "limit": 2}},
    }
).encode()


@st.composite
def mutated(draw: st.DrawFn, original: bytes = VALID) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at]
    return bytes(data)


@FAST
@given(mutated())
def test_mutated_requests_never_hurt_the_server(session: Session, data: bytes) -> None:
    status, body = session.send(data)
    if status >= 400:
        assert error_code(body) in JSONRPC_CODES
    session.assert_still_serving()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@FAST
@given(json_values.filter(lambda v: not (isinstance(v, dict) and v.get("jsonrpc") == "2.0")))
def test_json_that_is_not_jsonrpc_is_an_invalid_request(session: Session, value: Any) -> None:
    status, body = session.send(json.dumps(value).encode())
    assert status == 400
    assert error_code(body) == -32600
    session.assert_still_serving()


def is_valid_envelope(message: dict[str, Any]) -> bool:
    """JSON-RPC 2.0 as MCP uses it: one object; ids are strings or integers; params an object."""
    if message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str) or not message["method"]:
        return False
    if "id" in message:
        mid = message["id"]
        if isinstance(mid, bool) or not isinstance(mid, str | int):
            return False
    return "params" not in message or isinstance(message["params"], dict | None)


ids = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN or Infinity
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
methods = st.one_of(
    st.sampled_from(
        [
            "tools/list",
            "tools/call",
            "ping",
            "resources/list",
            "resources/read",
            "prompts/get",
            "initialize",
            "notifications/initialized",
            "logging/setLevel",
            "completion/complete",
        ]
    ),
    st.text(max_size=20),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)
params = st.one_of(
    st.dictionaries(
        st.sampled_from(["name", "arguments", "uri", "cursor", "level", "_meta"]), json_values, max_size=3
    ),
    json_values,
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {}
    message["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", "2", 2.0, None]))
    if draw(st.booleans()):
        message["id"] = draw(ids)
    message["method"] = draw(methods)
    if draw(st.booleans()):
        message["params"] = draw(params)
    if draw(st.integers(0, 4)) == 0:
        message[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    return message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_jsonrpc_with_wrong_types_ids_and_versions_gets_the_right_code(
    session: Session, message: dict[str, Any]
) -> None:
    status, body = session.send(json.dumps(message).encode())
    if not is_valid_envelope(message):
        assert status == 400 and error_code(body) == -32600, (message, body)
    elif status == 202:
        assert "id" not in message  # only notifications are merely accepted
    elif status >= 400 or "error" in body:
        assert error_code(body) in JSONRPC_CODES | {-32603, -32002}, (message, body)
        assert body["error"]["code"] != -32603 or message["method"] == "initialize", body
    session.assert_still_serving()


@FAST
@given(
    st.lists(
        st.fixed_dictionaries(
            {"jsonrpc": st.just("2.0"), "id": st.integers(0, 99), "method": st.just("ping")}
        ),
        min_size=0,
        max_size=5,
    )
)
def test_batches_are_invalid_requests(session: Session, batch: list[dict[str, Any]]) -> None:
    status, body = session.send(json.dumps(batch).encode())
    assert status == 400 and error_code(body) == -32600
    assert "batch" in body["error"]["message"]


def test_unknown_methods_are_method_not_found(session: Session) -> None:
    for method in ("no/such/method", "tools/destroy", "x" * 10_000, "../../etc/passwd"):
        status, body = session.call(method)
        assert status == 200 and error_code(body) == -32601


def test_a_new_session_is_not_opened_by_garbage(session: Session) -> None:
    status, body = session.send(b"\x00\x01not json", with_session=False)
    assert status == 400 and error_code(body) == -32700
    status, body = session.send(json.dumps(INIT | {"jsonrpc": "1.0"}).encode(), with_session=False)
    assert status == 400 and error_code(body) == -32600


# -- tool arguments: generated from each tool's inputSchema, then broken ----------------------------------

NASTY_TEXT = st.sampled_from(
    [
        "../../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "/etc/shadow",
        "file:///etc/passwd",
        "secret.txt",
        "../secret.txt",
        "%2e%2e%2fsecret.txt",
        "..%2f..%2fadmin%2ffaults",
        "../admin/faults",
        "?down=true#x",
        "' OR '1'='1",
        "'; DROP TABLE items; --",
        "\" OR tenant != 'acme' --",
        "%",
        "_",
        "\\",
        "globex",
        "acme' UNION SELECT * FROM items --",
        "\x00",
        "\ud7ff\ue000",
        "😀" * 50,
        "${jndi:ldap://127.0.0.1/x}",
    ]
)
BAD_VALUES = st.one_of(
    NASTY_TEXT,
    st.text(max_size=50),
    st.integers(201, 5000).map(lambda n: "é" * n),
    st.just("x" * 200_000),
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**64, max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),  # what a JSON client can send
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)


@st.composite
def broken_arguments(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    valid = draw(from_schema(schema))
    how = draw(st.sampled_from(["valid", "wrong-type", "null", "extra", "drop", "not-an-object"]))
    properties = list(schema.get("properties", {}))
    if how == "not-an-object":
        return draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=5), st.integers()))
    args = dict(valid)
    if how in ("wrong-type", "null") and properties:
        name = draw(st.sampled_from(properties))
        args[name] = None if how == "null" else draw(BAD_VALUES)
    elif how == "extra":
        args[draw(st.text(min_size=1, max_size=10))] = draw(BAD_VALUES)
    elif how == "drop" and args:
        args.pop(draw(st.sampled_from(sorted(args))))
    return args


TOOLS = ["search_database", "get_config", "fetch_upstream", "ping"]


@pytest.mark.parametrize("tool", TOOLS)
def test_broken_tool_arguments_get_a_clean_error_and_nothing_outside_the_tool(
    session: Session, tools: dict[str, dict[str, Any]], tool: str
) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(broken_arguments(tools[tool]))
    def check(arguments: Any) -> None:
        status, body = session.call("tools/call", {"name": tool, "arguments": arguments})
        text = json.dumps(body)
        assert SECRET not in text and "root:x:0:0" not in text
        if status >= 400 or "error" in body:
            assert error_code(body) == -32602, body  # arguments that are not an object
            return
        result = body["result"]
        if result.get("isError"):
            message = result["content"][0]["text"]
            assert len(message) < 2000, "an error names the problem, it does not echo the input"
            return
        assert_within_the_tool(tool, arguments, result["structuredContent"])

    check()
    session.assert_still_serving()


def assert_within_the_tool(tool: str, arguments: dict[str, Any], data: dict[str, Any]) -> None:
    """A successful call answered only what the tool is meant to read."""
    if tool == "search_database":
        assert all(row["tenant"] == "acme" for row in data["rows"]), "no row crosses tenants"
    elif tool == "fetch_upstream":
        assert data["key"] == arguments["key"], "the key reached the upstream as one path segment"
        assert set(data) == {"key", "value", "served"}
    elif tool == "get_config":
        assert set(data) <= {"service", "region", "features", "limits"}


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "file://secret.txt",
        "file:../secret.txt",
        "../secret.txt",
        "secret.txt",
        "http://127.0.0.1:1/",
        "mcptrace://config/../../secret.txt",
        "",
        "x" * 5000,
    ],
    ids=lambda uri: uri[:40],
)
def test_no_resource_outside_what_is_published_can_be_read(session: Session, uri: str) -> None:
    status, body = session.call("resources/list")
    assert status == 200 and body["result"]["resources"] == []
    status, body = session.call("resources/read", {"uri": uri})
    assert SECRET not in json.dumps(body) and "root:x:0:0" not in json.dumps(body)
    assert "error" in body and error_code(body) in (-32602, -32002, -32601), body
