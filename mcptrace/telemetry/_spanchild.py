"""The span export child: `python -m mcptrace.telemetry._spanchild --protocol P`.

It reads frames (see `_spanwire`) from stdin, builds the spans and exports
them with the SDK's OTLP exporter for protocol P, configured by the same
`OTEL_*` variables as the server. Like the SDK's batch processor it sends a
batch once `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans (512) are waiting, or
`OTEL_BSP_SCHEDULE_DELAY` ms (5 s) after the first of them arrived: one HTTP
request per batch, whatever size the server's frames have. After each
export it writes one line to stdout, `DELIVERED FAILED`, which the server counts. End of stdin (the server
closed the pipe, or died) makes it shut the exporter down and exit. Ctrl-C in
a terminal is for the server, which then closes the pipe: the child ignores it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import threading
import time
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mcptrace.telemetry._otlp import PROTOCOLS, span_exporter
from mcptrace.telemetry._spanwire import SPANS, Rebuilder, read_frame

#: Spans per export at most unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says otherwise (the SDK's default):
#: one HTTP request per batch, and frames gather while one is under way.
MAX_BATCH = 512
#: Seconds a span waits for a full batch at most unless `OTEL_BSP_SCHEDULE_DELAY` says otherwise.
DEFAULT_DELAY = 5.0


def run(
    stdin: IO[bytes], acks: IO[bytes], exporter: SpanExporter, *, max_batch: int = MAX_BATCH,
    delay: float = DEFAULT_DELAY,
) -> None:
    """Export every span read from `stdin`, acknowledging each export on `acks`, until end of stream."""
    rebuilder = Rebuilder()
    pending: list[ReadableSpan] = []
    ready = threading.Condition()
    ended = False

    def export_loop() -> None:
        while True:
            with ready:
                while not pending and not ended:
                    ready.wait()
                if not pending:
                    return
                due = time.monotonic() + delay
                while len(pending) < max_batch and not ended and (left := due - time.monotonic()) > 0:
                    ready.wait(left)
                batch = pending[:max_batch]
                del pending[:max_batch]
            try:
                delivered = exporter.export(batch) is SpanExportResult.SUCCESS
            except Exception:
                delivered = False
            n = len(batch)
            try:
                acks.write(b"%d %d\n" % ((n, 0) if delivered else (0, n)))
                acks.flush()
            except (BrokenPipeError, ValueError):
                return  # the server is gone: nobody to report to

    exporting = threading.Thread(target=export_loop, name="mcptrace-span-export", daemon=True)
    exporting.start()
    try:
        while (message := read_frame(stdin)) is not None:
            if message[0] != SPANS:
                continue
            spans = rebuilder.spans(message)
            with ready:
                pending.extend(spans)
                if len(pending) >= max_batch or len(pending) == len(spans):
                    ready.notify()
    finally:
        with ready:
            ended = True
            ready.notify()
        exporting.join()
        exporter.shutdown()


def _max_batch() -> int:
    value = os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else MAX_BATCH


def _delay() -> float:
    value = os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip()
    try:
        return float(value) / 1000 if float(value) >= 0 else DEFAULT_DELAY
    except ValueError:
        return DEFAULT_DELAY


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
        run(sys.stdin.buffer, acks, exporter, max_batch=_max_batch(), delay=_delay())
    except BrokenPipeError:
        return 0  # the server is gone: nobody to report to
    except (EOFError, ValueError, TypeError, KeyError, IndexError, pickle.UnpicklingError) as exc:
        print(f"mcptrace span export: unreadable input from the server ({exc}); exiting", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
