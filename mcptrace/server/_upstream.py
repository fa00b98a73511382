"""`mcptrace upstream`: a small HTTP API to stand behind `fetch_upstream`, with switchable faults.

`GET /items/{key}` answers a JSON document. `POST /admin/faults` with
`{"latency_ms": 0, "fail_rate": 0.0, "down": false}` switches how it behaves;
`GET /admin/faults` shows the current switches. Faults are decided by a seeded
counter, not randomness, so a test sees the same sequence every time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Faults:
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    down: bool = False


def upstream_app(faults: Faults | None = None) -> Starlette:
    state = faults or Faults()
    counter = {"n": 0}

    async def item(request: Request) -> JSONResponse:
        counter["n"] += 1
        if state.latency_ms:
            await anyio.sleep(state.latency_ms / 1000)
        if state.down:
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        n = counter["n"]
        if state.fail_rate and int(n * state.fail_rate) != int((n - 1) * state.fail_rate):
            return JSONResponse({"error": "internal failure"}, status_code=500)
        key = request.path_params["key"]
        return JSONResponse({"key": key, "value": f"upstream value for {key}", "served": counter["n"]})

    async def get_faults(request: Request) -> JSONResponse:
        return JSONResponse(asdict(state))

    async def set_faults(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            for name in ("latency_ms", "fail_rate"):
                if name in body:
                    setattr(state, name, float(body[name]))
            if "down" in body:
                state.down = bool(body["down"])
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault switch: {exc}"}, status_code=400)
        return JSONResponse(asdict(state))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "down" if state.down else "ok"}, status_code=503 if state.down else 200)

    return Starlette(
        routes=[
            Route("/items/{key}", item),
            Route("/admin/faults", get_faults, methods=["GET"]),
            Route("/admin/faults", set_faults, methods=["POST"]),
            Route("/health", health),
        ]
    )
