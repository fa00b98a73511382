"""Tool arguments that fail validation, told back in one plain line per problem.

The SDK reports such a call as a tool execution error (`isError: true`, as MCP
asks since 2025-11-25, so a model can read it and correct itself), but its
text is pydantic's whole report: the model class name, indented blocks and a
documentation link per problem. `ArgumentCheckingServer` keeps the SDK's shape
and replaces only the text, e.g.

    invalid arguments for search_database: limit: Input should be a valid integer (got "ten")

The work happens on the failure path only: a call whose arguments validate
costs nothing more.

`prompts/get` is answered the same way: a prompt that does not exist, or a call
without one of its required arguments, is the client's mistake and gets
`-32602` with a message saying which (the SDK would answer code 0 and print a
traceback); a prompt that fails to render is `-32603`, without a traceback.
"""

from __future__ import annotations

from typing import Any

import orjson
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, GetPromptResult, InputRequiredResult
from pydantic import ValidationError

from mcptrace._errors import INTERNAL_ERROR, INVALID_PARAMS

#: Problems listed at most; a call this far off is told how many more there were.
MAX_PROBLEMS = 10
#: Characters of a rejected value echoed back: enough to recognise it, never the whole input.
MAX_VALUE_CHARS = 40
_MAX_MESSAGE_CHARS = 200


def describe_invalid_arguments(tool: str, error: ValidationError) -> str:
    """One line per problem: where (`limit`, `items[0].name`), what pydantic says, and the value given."""
    problems = [_problem(detail) for detail in error.errors(include_url=False)]
    if len(problems) == 1:
        return f"invalid arguments for {tool}: {problems[0]}"
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    return "\n".join([f"invalid arguments for {tool} ({len(problems)} problems):", *shown])


def _problem(detail: Any) -> str:
    where = _location(detail.get("loc", ()))
    message = " ".join(str(detail.get("msg", "invalid value")).split())[:_MAX_MESSAGE_CHARS]
    if str(detail.get("type", "")).startswith("missing"):  # its input is the whole object: nothing to point at
        return f"{where}: {message}"
    return f"{where}: {message} (got {_shown(detail.get('input'))})"


def _location(loc: Any) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text[:_MAX_MESSAGE_CHARS] or "arguments"


def _shown(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = type(value).__name__
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


class ArgumentCheckingServer(MCPServer[Any]):
    """`MCPServer` whose tools answer invalid arguments in plain words (see the module docstring)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            # Chained to the ValidationError still: the SDK logs the offending field names from it.
            raise ToolError(describe_invalid_arguments(name, cause)) from cause

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[Any, Any] | None = None
    ) -> GetPromptResult | InputRequiredResult:
        prompt = next((p for p in await self.list_prompts() if p.name == name), None)
        if prompt is None:
            raise MCPError(INVALID_PARAMS, f"Unknown prompt: {name[:_MAX_MESSAGE_CHARS]}", {"name": name[:200]})
        missing = sorted(a.name for a in prompt.arguments or [] if a.required and a.name not in (arguments or {}))
        if missing:
            raise MCPError(INVALID_PARAMS, f"Missing required arguments for prompt {name}: {', '.join(missing)}",
                           {"name": name, "missing": missing})
        try:
            return await super().get_prompt(name, arguments, context)
        except MCPError:
            raise
        except Exception:
            raise MCPError(INTERNAL_ERROR, f"Prompt {name} could not be rendered") from None
