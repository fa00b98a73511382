"""Helpers for testing against a real `mcptrace serve` (shipped so users can test their deployments too).

`running_server()` starts the real server in a subprocess on a free loopback
port and stops it with SIGTERM; every wait is bounded.
"""

from mcptrace._process import RunningProcess, running, stop_process, subprocess_env
from mcptrace._testing import initialize_message, running_proxy, running_server, running_upstream

__all__ = [
    "RunningProcess", "initialize_message", "running", "running_proxy", "running_server", "running_upstream",
    "stop_process", "subprocess_env",
]
