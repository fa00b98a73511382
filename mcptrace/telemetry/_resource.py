"""The resource every exported span and metric carries: what the `OTEL_*` variables name, and mcptrace's version."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource

from mcptrace._version import __version__

DEFAULT_SERVICE_NAME = "mcptrace"


def make_resource() -> Resource:
    """`OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` as given; `service.name=mcptrace` and
    `service.version` (mcptrace's) where they name none."""
    resource = Resource({"service.version": __version__}).merge(Resource.create({}))
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return hashed_resource(resource.attributes, resource.schema_url)


def hashed_resource(attributes: Any, schema_url: str | None = None) -> Resource:
    """A resource as given, hashed once (see `_HashedOnce`)."""
    return _HashedOnce(attributes, schema_url)


class _HashedOnce(Resource):
    """A `Resource` that computes its hash once.

    The OTLP encoders group every exported span and metric by resource, and
    `Resource.__hash__` serialises all its attributes to JSON each time; a
    resource never changes, so once is enough.
    """

    def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash
