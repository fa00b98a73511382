"""CPU per exported span on each export path, in the server process and in the export child.

    python bench/span_export.py [--batches 100]

Builds one batch of 64 finished spans shaped like a `tools/call` SERVER span
(the attributes mcptrace and the SDK set), then exports it `--batches` times
to a live oteltap receiver (its own process) through the OTLP/HTTP exporter on
this thread (`MCPTRACE_SPAN_EXPORT=thread`) and through `ProcessSpanExporter`
(`process`), waiting for every batch to be delivered; then as many request
records (what a traced request hands on: the child builds their spans) through
`ProcessSpanExporter.export_items`, 64 at a time, as the server's span queue
sends them. It reports this process's CPU per span (what holds the interpreter
lock a server's requests need) and the child's. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batch() -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from mcptrace.telemetry._otlp import make_resource

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=make_resource())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("mcp-python-sdk", "2.3.0")
    for i in range(64):
        attributes = {
            "mcp.method.name": "tools/call", "gen_ai.tool.name": "lookup", "gen_ai.operation.name": "execute_tool",
            "jsonrpc.request.id": str(i), "mcp.session.id": f"{i:032x}", "mcp.protocol.version": "2025-11-25",
            "network.transport": "tcp", "mcptrace.mcp_request_id": f"01JB{i:022d}", "mcptrace.caller": "anonymous",
            "mcptrace.tenant": "default", "mcptrace.tool": "lookup", "mcptrace.client.name": "bench",
        }
        with tracer.start_as_current_span("tools/call lookup", kind=SpanKind.SERVER, attributes=attributes):
            pass
    return list(memory.get_finished_spans())


def _records() -> list[Any]:
    """64 records of finished `tools/call` requests, as the request log leaves them."""
    from mcptrace.telemetry._context import CallContext

    records = []
    for i in range(64):
        call = CallContext(f"req-{i:016x}", "tools/call", f"{i:032x}", str(i), "lookup", "bench", "default")
        call.transport, call.protocol_version = "http", "2025-11-25"
        call.trace_id, call.span_id, call.sampled = 0x1234 + i, 0x5678 + i, True
        call.start_ns, call.duration_s, call.status = time.time_ns(), 0.0004, "success"
        call.client_spans = []
        records.append(call)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    tap = subprocess.Popen([sys.executable, "-m", "oteltap", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from opentelemetry.sdk.trace.export import SpanExportResult

        from mcptrace.telemetry._otlp import span_exporter
        from mcptrace.telemetry._spanprocess import ProcessSpanExporter

        batch = _batch()
        deadline = time.monotonic() + 30
        thread = span_exporter({})
        while thread.export(batch) is not SpanExportResult.SUCCESS:  # the receiver is up once one lands
            if time.monotonic() > deadline:
                raise RuntimeError("oteltap did not start")
            time.sleep(0.2)
        spans = args.batches * len(batch)
        before = time.process_time()
        for _ in range(args.batches):
            thread.export(batch)
        in_thread = (time.process_time() - before) / spans * 1e6
        thread.shutdown()

        process = ProcessSpanExporter()
        process.export(batch)
        process.force_flush(30_000)  # the child is up and warm
        pid = process.child_pid
        assert pid is not None
        before, child_before = time.process_time(), _cpu(pid)
        for _ in range(args.batches):
            process.export(batch)
        delivered = process.force_flush(60_000)
        here, child = (time.process_time() - before) / spans * 1e6, (_cpu(pid) - child_before) / spans * 1e6
        records, resource = _records(), batch[0].resource
        before, child_before = time.process_time(), _cpu(pid)
        for _ in range(args.batches):
            process.export_items(records, resource)
        records_delivered = process.force_flush(60_000)
        from_records = (time.process_time() - before) / spans * 1e6
        records_child = (_cpu(pid) - child_before) / spans * 1e6
        process.shutdown()
    finally:
        tap.kill()
        tap.wait(10)
    print(f"{args.batches} batches of {len(batch)} spans to oteltap over OTLP/HTTP, CPU per span:")
    print(f"  thread export:  {in_thread:6.1f} us in the server process")
    print(f"  process export: {here:6.1f} us in the server process, {child:6.1f} us in the child "
          f"({'all delivered' if delivered and not process.drops.total() else 'NOT all delivered'})")
    print(f"  request records: {from_records:6.1f} us in the server process, {records_child:6.1f} us in the child "
          f"({'all delivered' if records_delivered and not process.drops.total() else 'NOT all delivered'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
