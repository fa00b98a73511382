"""The notebook stack is optional: import it on first use, with an actionable message when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from mcptrace._errors import MissingDependencyError
from mcptrace._install import install_hint


def require(module: str) -> ModuleType:
    """Import `module` (plotly, ipywidgets, kaleido...) or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        raise MissingDependencyError(
            f"{top} is needed for mcptrace's notebook views and reports: {install_hint('notebook')}"
        ) from exc
