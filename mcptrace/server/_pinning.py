"""Hash-pinned remote resources: the manifest, the mutable-reference rule, build and verify.

A deployment ships a manifest (never fetched) that maps each remote resource
URL to the SHA-256 of the bytes that were reviewed at build time:

    {"manifest_version": 1,
     "resources": [{"url": "https://cdn.example.com/tools/v1.4.0/lookup.json",
                    "sha256": "<64 hex digits>", "kind": "tool", "name": "lookup"}]}

A URL must name immutable content, or the pin means nothing the day the
content behind it moves. The rule, checked at build time and again at load:

* `https://`, or `http://` to a loopback host only;
* no path segment or query value that names a moving target: `latest`, `main`,
  `master`, `head`, `trunk`, `develop`, `dev`, `stable`, `nightly`, `edge`,
  `current`, `default`, `release` (any case);
* at least one segment or query value that pins the content: a version
  (`v1.4.0`, `2.3`, or a file name like `lookup-1.4.0.json`), a 40-hex commit,
  or a 64-hex / `sha256:` digest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from mcptrace._errors import ConfigError

MANIFEST_VERSION = 1
KINDS = ("tool", "prompt")
MAX_DOCUMENT_BYTES = 256 * 1024
MUTABLE_NAMES = frozenset(
    {
        "latest",
        "main",
        "master",
        "head",
        "trunk",
        "develop",
        "dev",
        "stable",
        "nightly",
        "edge",
        "current",
        "default",
        "release",
    }
)
_VERSION = re.compile(r"^v?\d+(\.\d+){1,3}([-+][0-9a-z.]+)?$", re.IGNORECASE)
_VERSION_IN_NAME = re.compile(r"[-_@]v?\d+(\.\d+){1,3}([-+][0-9a-z]+)*(\.[a-z0-9]+)?$", re.IGNORECASE)
_DIGEST = re.compile(r"^(sha256[:\-])?([0-9a-f]{40}|[0-9a-f]{64})$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ConfigError):
    """A manifest, or a URL in it, that cannot be trusted as written."""


@dataclass(frozen=True)
class PinnedResource:
    url: str
    sha256: str
    kind: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url, "sha256": self.sha256, "kind": self.kind, "name": self.name}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_immutable_url(url: str) -> None:
    """Raise `ManifestError` unless `url` names immutable content (see the module docstring)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "http":
        if not _is_loopback(host):
            raise ManifestError(f"{url}: plain http is only allowed to a loopback host; use https")
    elif parts.scheme != "https":
        raise ManifestError(f"{url}: only https:// (or http:// to loopback) resources can be pinned")
    if not host:
        raise ManifestError(f"{url}: no host")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    segments += [unquote(v) for _, v in parse_qsl(parts.query)]
    for segment in segments:
        for token in re.split(r"[@:]", segment):
            if token.lower() in MUTABLE_NAMES:
                raise ManifestError(
                    f"{url}: {token!r} is a mutable reference; pin a version or a content digest"
                )
    if not any(_pins(s) for s in segments):
        raise ManifestError(
            f"{url}: no version or digest in the URL; a pinned URL must name immutable content "
            "(e.g. .../v1.4.0/tool.json, tool-1.4.0.json, a 40-hex commit or a sha256 digest)",
        )


def _pins(segment: str) -> bool:
    tail = segment.rsplit("@", 1)[-1]
    return bool(_VERSION.match(tail) or _DIGEST.match(tail) or _VERSION_IN_NAME.search(segment))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_manifest(path: Path) -> list[PinnedResource]:
    """Read and check a manifest file; every problem is a `ManifestError` naming the file."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ManifestError(f"resources manifest {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"resources manifest {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
        raise ManifestError(
            f"resources manifest {path}: expected an object with manifest_version {MANIFEST_VERSION}"
        )
    entries = data.get("resources")
    if not isinstance(entries, list):
        raise ManifestError(f"resources manifest {path}: 'resources' must be a list")
    resources: list[PinnedResource] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("url", "sha256", "kind", "name")
        ):
            raise ManifestError(
                f"resources manifest {path}: entry {i} needs string url, sha256, kind and name"
            )
        if not _SHA256.match(entry["sha256"]):
            raise ManifestError(
                f"resources manifest {path}: entry {i} sha256 must be 64 lowercase hex digits"
            )
        check_immutable_url(entry["url"])
        resources.append(PinnedResource(entry["url"], entry["sha256"], entry["kind"], entry["name"]))
    names = [(r.kind, r.name) for r in resources]
    if len(set(names)) != len(names):
        raise ManifestError(f"resources manifest {path}: a tool or prompt name appears twice")
    return resources


def manifest_bytes(resources: list[PinnedResource]) -> bytes:
    body: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "resources": [r.to_dict() for r in resources],
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


@dataclass(frozen=True)
class Document:
    kind: str
    name: str
    description: str
    template: str
    parameters: dict[str, str]


def parse_document(data: bytes, *, origin: str) -> Document:
    """A tool or prompt document from verified bytes; `ConfigError` if it is not one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected a JSON object")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{origin}: 'kind' must be one of {', '.join(KINDS)}")
    params = doc.get("parameters" if kind == "tool" else "arguments", {})
    texts = (doc.get("name"), doc.get("template"), doc.get("description", ""))
    if not all(isinstance(t, str) for t in texts) or not doc.get("name"):
        raise ConfigError(f"{origin}: 'name' and 'template' must be non-empty strings")
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and k.isidentifier() and isinstance(v, str) for k, v in params.items()
    ):
        raise ConfigError(f"{origin}: parameters must map identifier names to descriptions")
    template = string.Template(doc["template"])
    unknown = set(template.get_identifiers()) - set(params)
    if unknown or not template.is_valid():
        raise ConfigError(f"{origin}: template placeholders {sorted(unknown)} are not declared parameters")
    return Document(kind, doc["name"], doc.get("description", ""), doc["template"], dict(params))


def build_manifest(urls: list[str], *, timeout: float = 10.0) -> list[PinnedResource]:
    """Fetch each URL once, check it is an immutable reference to a valid document, record its SHA-256."""
    import httpx

    resources: list[PinnedResource] = []
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for url in urls:
            check_immutable_url(url)
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                raise ManifestError(f"{url}: fetch failed ({type(exc).__name__}: {exc})") from None
            if response.status_code != 200:
                raise ManifestError(
                    f"{url}: answered HTTP {response.status_code}; pin a URL that serves the resource"
                )
            data = response.content
            if len(data) > MAX_DOCUMENT_BYTES:
                raise ManifestError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
            doc = parse_document(data, origin=url)
            resources.append(PinnedResource(url, sha256_hex(data), doc.kind, doc.name))
    return resources
