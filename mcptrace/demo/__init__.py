"""`mcptrace demo`: a real server, a real upstream and scripted agents, with incidents to investigate."""

from mcptrace.demo._run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
