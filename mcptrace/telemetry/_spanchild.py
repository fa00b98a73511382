"""The span export child: `python -m mcptrace.telemetry._spanchild --protocol P`.

It reads frames (see `_spanwire`) from stdin, rebuilds the spans and exports
them with the SDK's OTLP exporter for protocol P, configured by the same
`OTEL_*` variables as the server. After each batch it writes one line to
stdout, `DELIVERED FAILED`, which the server counts. End of stdin (the server
closed the pipe, or died) makes it shut the exporter down and exit. Ctrl-C in
a terminal is for the server, which then closes the pipe: the child ignores it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
from typing import IO

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mcptrace.telemetry._otlp import PROTOCOLS, span_exporter
from mcptrace.telemetry._spanwire import SPANS, Rebuilder, read_frame


def run(stdin: IO[bytes], acks: IO[bytes], exporter: SpanExporter) -> None:
    """Export every batch read from `stdin`, acknowledging each on `acks`, until end of stream."""
    rebuilder = Rebuilder()
    try:
        while (message := read_frame(stdin)) is not None:
            if message[0] != SPANS:
                continue
            spans = rebuilder.spans(message)
            try:
                delivered = exporter.export(spans) is SpanExportResult.SUCCESS
            except Exception:
                delivered = False
            n = len(spans)
            acks.write(b"%d %d\n" % ((n, 0) if delivered else (0, n)))
            acks.flush()
    finally:
        exporter.shutdown()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m mcptrace.telemetry._spanchild")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=PROTOCOLS[0])
    args = parser.parse_args(argv)
    # The acknowledgements own the real stdout; anything else printed goes to stderr.
    acks = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    exporter = span_exporter({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": args.protocol})
    try:
        run(sys.stdin.buffer, acks, exporter)
    except BrokenPipeError:
        return 0  # the server is gone: nobody to report to
    except (EOFError, ValueError, TypeError, KeyError, IndexError, pickle.UnpicklingError) as exc:
        print(f"mcptrace span export: unreadable input from the server ({exc}); exiting", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
