"""The `mcptrace` command line.

Each command lives in its own module with a `register(subparsers)` function;
modules import what they need inside the command, so `mcptrace chain` never
pays for the server's imports.

Exit codes: 0 success, 1 the check failed (gate, probe, a refused change),
2 a user mistake (a bad option, path, duration, busy port or missing extra),
reported as one `mcptrace: error: ...` line on stderr, never a traceback.
"""

from mcptrace.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
