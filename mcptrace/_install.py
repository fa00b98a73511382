"""How to install an optional extra, said in a way that works where this copy of mcptrace came from.

mcptrace may not be on the package index, so `pip install 'mcptrace[notebook]'`
is not an answer everyone can use. From a clone the hint installs the clone with
the extra; from an installed wheel it names the extra's own packages, which pip
finds wherever the wheel came from.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def source_checkout() -> Path | None:
    """The repository root when mcptrace runs from a clone (`pyproject.toml` beside the package), else None."""
    root = _PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() else None


def extra_requirements(extra: str) -> list[str]:
    """The requirements an installed mcptrace declares for `extra` (`plotly>=6.1`, ...); [] when unknown."""
    try:
        declared = metadata.requires("mcptrace") or []
    except metadata.PackageNotFoundError:
        return []
    wanted = [f'extra == "{extra}"', f"extra == '{extra}'"]
    return [req.partition(";")[0].strip() for req in declared if any(w in req for w in wanted)]


def install_hint(extra: str) -> str:
    """A pip command that installs `extra`: the clone with it, the extra's packages, or `mcptrace[extra]`."""
    root = source_checkout()
    if root is not None:
        return f"pip install -e '{root}[{extra}]'"
    requirements = extra_requirements(extra)
    if requirements:
        return "pip install " + " ".join(f"'{r}'" for r in requirements)
    return f"pip install 'mcptrace[{extra}]'"
