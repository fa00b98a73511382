"""The analysis layer and the `chain` command load no server code (and `chain` no polars)."""

from __future__ import annotations

import json
import subprocess
import sys

import mcptrace.analysis
from mcptrace.testing import subprocess_env

SERVER_MODULES = ("starlette", "uvicorn", "mcp")


def loaded_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def test_importing_the_analysis_layer_loads_no_server_code() -> None:
    modules = loaded_modules("import mcptrace.analysis\nfrom mcptrace.analysis import *")
    assert "polars" in modules
    assert not modules & set(SERVER_MODULES)


def test_the_chain_lookup_loads_neither_polars_nor_pyarrow() -> None:
    modules = loaded_modules(
        "from mcptrace.cli import build_parser\nfrom mcptrace.logs._lookup import lookup\n"
        "import mcptrace.cli._chain"
    )
    assert not modules & {"polars", "pyarrow", *SERVER_MODULES}


def test_the_public_api_is_pinned() -> None:
    for name in mcptrace.analysis.__all__:
        assert getattr(mcptrace.analysis, name) is not None
    for name in ("load", "chain", "tool_stats", "build_index", "report_text", "loops", "sessions", "runs"):
        assert name in mcptrace.analysis.__all__, name
