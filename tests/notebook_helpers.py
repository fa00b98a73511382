"""What the sample logs are known to contain, read from the generator's record of what it planted."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs" / "incidents"


def planted() -> dict[str, dict[str, Any]]:
    data = tomllib.loads((ROOT / "sample_logs" / "planted.toml").read_text())
    for window in data.values():
        for key in ("start", "end"):
            window[key] = datetime.fromisoformat(window[key].replace("Z", "+00:00"))
    return data
