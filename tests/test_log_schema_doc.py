"""docs/log-schema.md documents exactly the schema the code declares."""

from __future__ import annotations

from mcptrace import _schemadoc
from mcptrace._schema import LOG_FIELDS


def test_the_reference_tables_are_generated_from_the_schema_and_up_to_date() -> None:
    text = _schemadoc.DOC.read_text()
    assert _schemadoc.updated(text) == text, "docs/log-schema.md is stale: run python -m mcptrace._schemadoc"


def test_every_declared_field_appears_in_the_document_with_its_polars_dtype() -> None:
    text = _schemadoc.DOC.read_text()
    for name in LOG_FIELDS:
        assert f"| `{name}` |" in text, name
        assert f"`{_schemadoc._dtype(name)}`" in text, name


def test_a_stale_document_is_detected(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "log-schema.md"
    stale.write_text(_schemadoc.DOC.read_text().replace("| `client_name` |", "| `client` |"))
    monkeypatch.setattr(_schemadoc, "DOC", stale)
    assert _schemadoc.main(["--check"]) == 1
    assert _schemadoc.main([]) == 0
    assert _schemadoc.main(["--check"]) == 0
