"""Tool arguments that fail validation are told back in plain words, one line per problem.

The official SDK client against the real server, in both protocol eras: the
answer keeps MCP's shape for this case (a tool execution error, `isError:
true`, not a JSON-RPC error), names the tool and each field, and carries none
of pydantic's report (model names, documentation links). The log's `error`
holds the same text.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ValidationError

from mcptrace.server._arguments import MAX_VALUE_CHARS, describe_invalid_arguments
from mcptrace.testing import RunningProcess
from tests.helpers import assert_contract, read_log, wait_for_log

MODES = ["legacy", "auto"]
META_REQUEST_ID = "mcptrace/mcp_request_id"


def call(server: RunningProcess, mode: str, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async def main() -> CallToolResult:
        with anyio.fail_after(30):
            async with Client(server.url, mode=mode) as client:  # type: ignore[arg-type]
                return await client.call_tool(tool, arguments)

    return anyio.run(main)


def text_of(result: CallToolResult) -> str:
    assert result.is_error, result
    assert result.structured_content is None
    (content,) = result.content
    assert isinstance(content, TextContent)
    return content.text


def assert_plain(text: str) -> None:
    assert "pydantic" not in text.lower() and "http" not in text
    assert "Arguments" not in text, "no model class names"
    assert "type=" not in text and "input_value" not in text


def logged_for(server: RunningProcess, result: CallToolResult) -> list[dict[str, Any]]:
    request_id = (result.meta or {})[META_REQUEST_ID]
    lines = wait_for_log(
        server.log_file, lambda r: r.get("mcp_request_id") == request_id and r["event"] == "tool_call"
    )
    assert lines, request_id
    return [r for r in read_log(server.log_file) if r.get("mcp_request_id") == request_id]


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_type_is_named_with_its_field_and_the_value_given(server: RunningProcess, mode: str) -> None:
    result = call(server, mode, "search_database", {"query": "anvil", "limit": "ten"})
    text = text_of(result)
    assert text.startswith("invalid arguments for search_database: limit: Input should be a valid integer")
    assert text.endswith('(got "ten")')
    assert "\n" not in text
    assert_plain(text)

    lines = logged_for(server, result)
    assert_contract(lines)
    (tool_call,) = [r for r in lines if r["event"] == "tool_call"]
    assert tool_call["status"] == "error" and tool_call["error"] == text
    assert [r["event"] for r in lines] == ["tool_call"]  # one line per request
    for line in lines:
        assert_plain(str(line.get("error") or ""))


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_field_is_named(server: RunningProcess, mode: str) -> None:
    result = call(server, mode, "fetch_upstream", {})
    text = text_of(result)
    assert text == "invalid arguments for fetch_upstream: key: Field required"
    (tool_call,) = [r for r in logged_for(server, result) if r["event"] == "tool_call"]
    assert tool_call["error"] == text


def test_several_problems_get_one_line_each(server: RunningProcess) -> None:
    text = text_of(call(server, "auto", "search_database", {"limit": [1, 2]}))
    header, *problems = text.split("\n")
    assert header == "invalid arguments for search_database (2 problems):"
    assert [p.split(":")[0] for p in problems] == ["query", "limit"]
    assert problems[0] == "query: Field required"
    assert problems[1].endswith("(got [1,2])")
    assert_plain(text)


def test_a_large_rejected_value_is_shown_only_in_part(server: RunningProcess) -> None:
    text = text_of(call(server, "auto", "search_database", {"query": {"q": "x" * 5000}}))
    assert text.startswith("invalid arguments for search_database: query: Input should be a valid string (got {")
    shown = text[text.index("(got ") + 5 : -1]
    assert len(shown) == MAX_VALUE_CHARS and shown.endswith("...")


def test_a_tool_refusing_valid_arguments_keeps_its_own_words(server: RunningProcess) -> None:
    text = text_of(call(server, "auto", "search_database", {"query": "anvil", "limit": 500}))
    assert "limit must be between 1 and 50" in text and "invalid arguments" not in text


def test_valid_arguments_are_served_as_before(server: RunningProcess) -> None:
    result = call(server, "legacy", "search_database", {"query": "anvil", "limit": 2})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["count"] == 2


class _Line(BaseModel):
    name: str
    qty: int


class _Order(BaseModel):
    lines: list[_Line]


def test_nested_fields_are_located_by_path() -> None:
    with pytest.raises(ValidationError) as caught:
        _Order.model_validate({"lines": [{"name": "a", "qty": 1}, {"name": "b", "qty": "many"}]})
    text = describe_invalid_arguments("order", caught.value)
    assert text.startswith("invalid arguments for order: lines[1].qty: Input should be a valid integer")
    assert text.endswith('(got "many")')
