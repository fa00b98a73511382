"""The shipped alert rules (`deploy/prometheus`), checked by Debian's promtool.

`promtool check rules` validates them; `promtool test rules` runs their unit
tests, which feed series shaped like mcptrace's `/metrics` and expect each alert
with its rendered labels and annotations. Beyond what promtool checks: every
alert fires in some unit test, every runbook line is a command the mcptrace CLI
accepts, and every metric the rules read is one mcptrace declares.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mcptrace.cli import build_parser
from tests.promql import RULES, declared_prometheus_names, metrics_read_by, rules

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = RULES.parent
UNIT_TESTS = RULES_DIR / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (scripts/test.sh installs it)")

#: What the runbook placeholders stand for when the commands are checked.
PLACEHOLDERS = {
    "LOGS": str(ROOT / "sample_logs" / "incidents"),
    "{{ $labels.tool }}": "search_database",
    "{{ $labels.url }}": "http://127.0.0.1:8765/mcp",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_every_alert_fires_in_its_promtool_unit_test_with_its_annotations() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    expected_to_fire = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    assert expected_to_fire == {rule["alert"] for rule in rules()}
    done = promtool("test", "rules", UNIT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_names_a_severity_and_a_runbook_command_the_cli_accepts() -> None:
    parser = build_parser()
    for rule in rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        runbook = rule["annotations"]["runbook"]
        for placeholder, value in PLACEHOLDERS.items():
            runbook = runbook.replace(placeholder, value)
        assert "{{" not in runbook, f"{rule['alert']}: no test value for a placeholder in {runbook!r}"
        argv = shlex.split(runbook)
        assert argv[0] == "mcptrace", rule["alert"]
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exc:  # argparse's way of refusing a command line
            pytest.fail(f"{rule['alert']}: `{runbook}` is not a command mcptrace accepts (exit {exc.code})")


def test_the_rules_read_only_metrics_mcptrace_declares() -> None:
    declared = declared_prometheus_names()
    for rule in rules():
        read = metrics_read_by(rule["expr"])
        assert read, rule["alert"]
        assert read <= declared, f"{rule['alert']} reads undeclared metrics {sorted(read - declared)}"

