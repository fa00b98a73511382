"""How to install an optional extra, said in a way that works where this copy of mcptrace came from."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def source_checkout() -> Path | None:
    """The repository root when mcptrace runs from a clone (`pyproject.toml` beside the package), else None."""
    root = _PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() else None


def install_hint(extra: str) -> str:
    """`pip install -e '/path/to/clone[extra]'` from a clone, `pip install 'mcptrace[extra]'` from a wheel."""
    root = source_checkout()
    if root is not None:
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install 'mcptrace[{extra}]'"
