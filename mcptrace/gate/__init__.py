"""Release safety: the handshake gate, scheduled probes and gated registry updates."""

from mcptrace.gate._gate import GateOptions, GateReport, Step, run_gate
from mcptrace.gate._probe import Alerting, Probe, ProbeState, run_probe

__all__ = ["Alerting", "GateOptions", "GateReport", "Probe", "ProbeState", "Step", "run_gate", "run_probe"]
