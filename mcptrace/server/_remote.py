"""Loading the manifest's remote tools and prompts: fetch, hash, compare, fall back, register.

Each resource is fetched at start-up and its bytes hashed before anything
reads them. A match is used and kept in a content-addressed cache. A mismatch
is logged with its full context (`resource_rejected`), counted, and the
resource falls back to the last verified copy in the cache; a resource with
no verified copy stops the start-up. The same fallback covers a fetch that
fails: the server never runs on bytes nobody reviewed.

Documents are small JSON objects:

    {"kind": "tool", "name": "greet", "description": "...",
     "template": "Hello, $who!", "parameters": {"who": "whom to greet"}}
    {"kind": "prompt", "name": "summarise", "description": "...",
     "template": "Summarise $topic in $words words.",
     "arguments": {"topic": "what to summarise", "words": "how many words"}}

A tool answers its template with the call's arguments substituted (`$name`
placeholders, `string.Template`: no expressions, no attribute access); a
prompt renders the same way into one user message.
"""

from __future__ import annotations

import inspect
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import Prompt, PromptArgument
from opentelemetry import metrics

from mcptrace import _fields as f
from mcptrace._errors import ConfigError
from mcptrace._files import atomic_write
from mcptrace.server._pinning import (
    MAX_DOCUMENT_BYTES,
    Document,
    PinnedResource,
    load_manifest,
    parse_document,
    sha256_hex,
)
from mcptrace.telemetry._log import EventLogger

FETCH_TIMEOUT_SECONDS = 10.0


@dataclass
class LoadedPins:
    """What start-up loaded, and from where: `remote` (verified now) or `cache` (verified earlier)."""

    loaded: dict[str, str] = field(default_factory=dict)  # url -> source
    rejected: list[str] = field(default_factory=list)  # urls whose fetched bytes did not match

    @property
    def from_cache(self) -> list[str]:
        return [url for url, source in self.loaded.items() if source == "cache"]


def register(server: MCPServer[Any], doc: Document) -> None:
    """Add one document to `server` as a tool or a prompt; never in place of one it already has."""
    if _registered(server, doc):
        raise ConfigError(
            f"remote {doc.kind} {doc.name!r} would replace the server's own {doc.kind}; rename it"
        )
    template = string.Template(doc.template)
    if doc.kind == "prompt":

        def render_prompt(**arguments: str) -> str:
            return template.safe_substitute({k: str(v) for k, v in arguments.items() if k in doc.parameters})

        server.add_prompt(
            Prompt(
                name=doc.name,
                title=None,
                context_kwarg=None,
                description=doc.description or None,
                fn=render_prompt,
                arguments=[
                    PromptArgument(name=k, description=v, required=True) for k, v in doc.parameters.items()
                ],
            )
        )
        return

    async def render_tool(**arguments: str) -> str:
        return template.substitute({k: str(v) for k, v in arguments.items()})

    # The SDK derives the tool's input schema from the signature: one required string per parameter.
    render_tool.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, annotation=str) for k in doc.parameters],
        return_annotation=str,
    )
    render_tool.__annotations__ = {**{k: str for k in doc.parameters}, "return": str}
    server.add_tool(render_tool, name=doc.name, description=doc.description or None)


def _registered(server: MCPServer[Any], doc: Document) -> bool:
    # The SDK's managers answer lookups synchronously; start-up runs before any event loop.
    manager = server._tool_manager if doc.kind == "tool" else server._prompt_manager
    lookup = manager.get_tool if doc.kind == "tool" else manager.get_prompt  # type: ignore[union-attr]
    return lookup(doc.name) is not None


class PinnedLoader:
    """Fetches and verifies the manifest's resources at start-up."""

    def __init__(
        self,
        manifest: Path,
        *,
        cache_dir: Path,
        logger: EventLogger,
        meter_provider: metrics.MeterProvider | None = None,
        timeout: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.resources = load_manifest(manifest)
        self.manifest = manifest
        self.cache_dir = cache_dir
        self.logger = logger
        self.timeout = timeout
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("mcptrace.resources")
        self._rejected = meter.create_counter(
            f.M_RESOURCES_REJECTED,
            description="remote resources whose bytes did not match their pinned hash",
        )

    def load(self) -> tuple[list[Document], LoadedPins]:
        """Every resource verified (now or earlier), or `ConfigError` naming those with no verified copy."""
        report = LoadedPins()
        documents: list[Document] = []
        missing: list[str] = []
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for resource in self.resources:
                data = self._verified_bytes(client, resource, report)
                if data is None:
                    missing.append(resource.url)
                    continue
                doc = parse_document(data, origin=resource.url)
                if (doc.kind, doc.name) != (resource.kind, resource.name):
                    raise ConfigError(
                        f"{resource.url}: is {doc.kind} {doc.name!r}, the manifest says "
                        f"{resource.kind} {resource.name!r}"
                    )
                documents.append(doc)
        if missing:
            self.logger.sink.flush()  # the reasons must reach the log before the process exits
            raise ConfigError(
                "refusing to start: no verified copy of "
                + ", ".join(missing)
                + f" (manifest {self.manifest}); see the resource_rejected log lines",
            )
        return documents, report

    def _cache_path(self, resource: PinnedResource) -> Path:
        return self.cache_dir / f"{resource.sha256}.json"

    def _verified_bytes(
        self, client: httpx.Client, resource: PinnedResource, report: LoadedPins
    ) -> bytes | None:
        context: dict[str, Any] = {
            f.RESOURCE_URL: resource.url,
            f.RESOURCE_KIND: resource.kind,
            f.TOOL_NAME: resource.name,
            f.EXPECTED_SHA256: resource.sha256,
        }
        problem: str
        try:
            response = client.get(resource.url)
            data = response.content[: MAX_DOCUMENT_BYTES + 1]
            if response.status_code != 200:
                problem = f"fetch answered HTTP {response.status_code}"
                context[f.HTTP_STATUS] = response.status_code
            elif len(data) > MAX_DOCUMENT_BYTES:
                problem = f"document larger than {MAX_DOCUMENT_BYTES} bytes"
            else:
                actual = sha256_hex(data)
                if actual == resource.sha256:
                    atomic_write(self._cache_path(resource), data)
                    report.loaded[resource.url] = "remote"
                    self.logger.emit(
                        f.EV_RESOURCE_LOADED,
                        **context,
                        **{
                            f.ACTUAL_SHA256: actual,
                            f.RESOURCE_SOURCE: "remote",
                            f.STATUS: f.SUCCESS,
                            f.MESSAGE: "fetched and verified",
                        },
                    )
                    return data
                problem = "content does not match the pinned sha256"
                context[f.ACTUAL_SHA256] = actual
                report.rejected.append(resource.url)
                self._rejected.add(1, {f.RESOURCE_KIND: resource.kind})
                self.logger.emit(
                    f.EV_RESOURCE_REJECTED,
                    "error",
                    **context,
                    **{
                        f.STATUS: f.FAILURE,
                        f.ERROR: problem,
                        f.HTTP_STATUS: response.status_code,
                        f.MESSAGE: f"refused {resource.kind} {resource.name!r}: {problem}",
                    },
                )
        except httpx.HTTPError as exc:
            problem = f"fetch failed: {type(exc).__name__}"
        return self._from_cache(resource, report, context, problem)

    def _from_cache(
        self,
        resource: PinnedResource,
        report: LoadedPins,
        context: dict[str, Any],
        problem: str,
    ) -> bytes | None:
        path = self._cache_path(resource)
        try:
            cached = path.read_bytes()
        except OSError:
            cached = None
        if cached is not None and sha256_hex(cached) == resource.sha256:
            report.loaded[resource.url] = "cache"
            self.logger.emit(
                f.EV_RESOURCE_LOADED,
                "warning",
                **context,
                **{
                    f.RESOURCE_SOURCE: "cache",
                    f.STATUS: f.SUCCESS,
                    f.ERROR: problem,
                    f.MESSAGE: f"{problem}; serving the last verified copy",
                },
            )
            return cached
        if resource.url in report.rejected:
            return None  # its resource_rejected line is already written
        self.logger.emit(
            f.EV_RESOURCE_REJECTED,
            "error",
            **context,
            **{
                f.STATUS: f.FAILURE,
                f.ERROR: problem,
                f.MESSAGE: f"{problem}; no verified copy in {self.cache_dir}, the server will not start",
            },
        )
        return None


def load_pinned_resources(
    server: MCPServer[Any],
    *,
    manifest: Path,
    cache_dir: Path,
    logger: EventLogger,
    meter_provider: metrics.MeterProvider | None = None,
) -> LoadedPins:
    """Verify every resource of `manifest` and register it on `server`; `ConfigError` refuses the start."""
    loader = PinnedLoader(manifest, cache_dir=cache_dir, logger=logger, meter_provider=meter_provider)
    documents, report = loader.load()
    for doc in documents:
        register(server, doc)
    return report
