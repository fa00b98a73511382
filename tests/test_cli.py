"""The command line as one tool: help everywhere, `--format` wherever data is printed, durations with
units, and every user mistake a one-line error with exit code 2. Each test runs the real CLI in a
subprocess, as a user would."""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mcptrace.cli import build_parser
from mcptrace.testing import RunningProcess, running_server, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
INCIDENTS = ROOT / "sample_logs" / "incidents" / "mcptrace.log"


def first_line_of(**fields: str) -> dict[str, Any]:
    """The first line of the sample log whose fields have these values."""
    with INCIDENTS.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if all(record.get(key) == value for key, value in fields.items()):
                return record
    raise AssertionError(f"no line with {fields} in {INCIDENTS}")
DEMO_V2 = ROOT / "sample_logs" / "demo-v2.jsonl"

#: Every command that prints data, with the arguments it needs to do so.
DATA_COMMANDS = [
    ["chain"], ["stats"], ["errors"], ["incidents"], ["loops"], ["runs"], ["sessions"], ["index"], ["report"],
    ["gate"], ["registry", "update"], ["token", "list"],
]


def mcptrace(*args: str | Path, cwd: Path | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run `mcptrace ARGS`; `prelude` is Python run first (to hide an installed extra, say)."""
    argv = [sys.executable, "-m", "mcptrace", *map(str, args)]
    if prelude:
        code = f"{prelude}\nimport sys\nfrom mcptrace.cli import main\nsys.exit(main(sys.argv[1:]))"
        argv = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=120, cwd=cwd)


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code 2 and one line on stderr saying what is wrong; no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


def every_command(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], argparse.ArgumentParser, str | None]
]:
    """(command words, parser, its help) for every command and sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from every_command(sub, (*path, name))


class TestHelp:
    def test_every_command_and_every_option_says_what_it_is_for(self) -> None:
        missing = []
        for words, parser, help_text in every_command(build_parser()):
            if not help_text:
                missing.append(" ".join(words))
            for action in parser._actions:
                if action.help is None and not isinstance(action, argparse._SubParsersAction):
                    missing.append(f"{' '.join(words)} {'/'.join(action.option_strings) or action.dest}")
        assert missing == []

    def test_the_top_level_help_lists_every_command_with_a_line_of_help(self) -> None:
        result = mcptrace("--help")
        assert result.returncode == 0
        for words, _, help_text in every_command(build_parser()):
            if len(words) == 1:
                assert f"{words[0]}" in result.stdout and (help_text or "")[:30] in result.stdout

    @pytest.mark.parametrize("words", [["demo"], ["upstream"], ["probe"], ["token", "revoke"]])
    def test_commands_once_bare_now_have_help(self, words: list[str]) -> None:
        result = mcptrace(*words, "--help")
        assert result.returncode == 0
        assert "show this help message" in result.stdout
        assert sum(1 for line in result.stdout.splitlines() if line.startswith("  ")) >= 2

    @pytest.mark.parametrize("words", DATA_COMMANDS, ids=" ".join)
    def test_every_command_that_prints_data_takes_format(self, words: list[str]) -> None:
        result = mcptrace(*words, "--help")
        assert result.returncode == 0
        assert "--format {table,json,csv}" in result.stdout

    def test_durations_say_they_take_a_unit(self) -> None:
        for words in (["stats"], ["sessions"], ["runs"], ["loops"], ["report"], ["probe"], ["token", "add"]):
            out = " ".join(mcptrace(*words, "--help").stdout.split())
            assert "unit" in out or "a bare number is seconds" in out, words


class TestDurations:
    @pytest.mark.parametrize(
        "args",
        [
            ["stats", INCIDENTS, "--every", "5"],
            ["sessions", INCIDENTS, "--timeline", "--every", "5"],
            ["runs", INCIDENTS, "--gap", "5"],
            ["loops", INCIDENTS, "--window", "5 minutes"],
            ["report", INCIDENTS, "--every", "5"],
            ["stats", INCIDENTS, "--every", "0s"],
            ["gate", "http://127.0.0.1:9/mcp", "--timeout", "soon"],
            ["probe", "http://127.0.0.1:9/mcp", "--every", "5x"],
            ["token", "add", "agent", "--tenant", "t", "--ttl", "a year"],
        ],
        ids=lambda a: " ".join(map(str, a[:1] + a[2:] if len(a) > 2 else a)),
    )
    def test_a_duration_without_a_usable_unit_is_a_one_line_error(self, args: list[str], tmp_path: Path) -> None:
        assert_user_error(mcptrace(*args, cwd=tmp_path), "not a duration")

    def test_windows_take_seconds_minutes_and_hours(self) -> None:
        for every in ("30s", "2m", "1h"):
            result = mcptrace("stats", INCIDENTS, "--every", every, "--format", "json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout), every
        hourly = json.loads(mcptrace("stats", INCIDENTS, "--every", "1h", "--format", "json").stdout)
        by_minute = json.loads(mcptrace("stats", INCIDENTS, "--every", "1m", "--format", "json").stdout)
        assert len(hourly) < len(by_minute)
        assert sum(r["calls"] for r in hourly) == sum(r["calls"] for r in by_minute)


class TestUserMistakes:
    @pytest.mark.parametrize(
        "args",
        [
            ["stats", "no-such.log"],
            ["errors", "no-such-dir/"],
            ["chain", "req-1", "no-such.log"],
            ["index", "no-such-dir"],
            ["report", "no-such-dir", "-o", "r.html"],
        ],
        ids=" ".join,
    )
    def test_a_path_that_does_not_exist(self, args: list[str], tmp_path: Path) -> None:
        assert_user_error(mcptrace(*args, cwd=tmp_path), "not found", "no-such")

    def test_an_unknown_option(self) -> None:
        assert_user_error(mcptrace("stats", "--colour", "red"), "unrecognized arguments")

    def test_a_number_out_of_range(self) -> None:
        assert_user_error(mcptrace("loops", INCIDENTS, "--threshold", "1"), "--threshold", "at least 2")

    def test_listing_a_token_store_that_does_not_exist(self, tmp_path: Path) -> None:
        result = mcptrace("token", "list", "--store", tmp_path / "tokens.json")
        assert_user_error(result, "tokens.json does not exist", "token add")
        assert not (tmp_path / "tokens.json").exists()

    @pytest.mark.parametrize("command", [["serve"], ["upstream"], ["proxy", "--target", "http://127.0.0.1:9/mcp"]])
    def test_a_busy_port(self, command: list[str], tmp_path: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = mcptrace(*command, "--port", str(port), *(["--data-dir", tmp_path] if command != ["upstream"]
                                                             else []), cwd=tmp_path)
        assert_user_error(result, f"127.0.0.1:{port}", "address already in use")

    def test_a_missing_notebook_extra_names_the_command_that_installs_it(self, tmp_path: Path) -> None:
        hide_plotly = "import sys; sys.modules['plotly'] = None"
        result = mcptrace("report", INCIDENTS, "-o", "r.html", cwd=tmp_path, prelude=hide_plotly)
        assert_user_error(result, "plotly", f"pip install -e '{ROOT}[notebook]'")
        assert not (tmp_path / "r.html").exists()

    def test_a_missing_redis_extra_names_the_command_that_installs_it(self, tmp_path: Path) -> None:
        result = mcptrace(
            "serve", "--port", "0", "--data-dir", tmp_path, "--redis-url", "redis://127.0.0.1:9",
            cwd=tmp_path, prelude="import sys; sys.modules['redis'] = None",
        )
        assert_user_error(result, "redis", f"pip install -e '{ROOT}[redis]'")


def test_from_an_installed_wheel_the_hint_names_the_extras_packages(tmp_path: Path) -> None:
    """A wheel may come from anywhere but the package index, so the hint installs the extra's packages."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", ROOT],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("mcptrace-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {**subprocess_env(), "PYTHONPATH": str(site)}
    code = (
        "import sys; sys.modules['plotly'] = None\n"
        "from mcptrace.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "report", INCIDENTS, "-o", tmp_path / "r.html"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert_user_error(result, "pip install '", "'plotly>=6.1'", "'ipywidgets>=8.1'", "'kaleido>=1.0'")
    assert str(ROOT) not in result.stderr


def documented_shapes() -> dict[str, str]:
    """docs/cli.md's table: command (its first words) -> `list` or `object`."""
    shapes = {}
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2 and cells[1] in ("list", "object"):
            shapes[cells[0].strip("`").replace(" ID", "").replace(" URL", "")] = cells[1]
    return shapes


class TestFormats:
    @pytest.mark.parametrize(
        "command",
        ["chain", "stats", "errors", "incidents", "loops", "runs", "sessions", "sessions --timeline", "index",
         "report"],
    )
    def test_the_json_shape_is_the_documented_one(self, command: str, tmp_path: Path) -> None:
        log = tmp_path / "mcptrace.log"
        log.write_bytes(INCIDENTS.read_bytes())
        words = command.split()
        request_id = first_line_of(event="response_sent")["mcp_request_id"]
        args: list[str | Path] = [words[0], *([request_id] if command == "chain" else []), log, *words[1:]]
        if command == "report":
            args += ["-o", tmp_path / "r.html"]
        result = mcptrace(*args, "--format", "json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        expected = {"list": list, "object": dict}[documented_shapes()[command]]
        value = json.loads(result.stdout)
        assert isinstance(value, expected) and value

    def test_every_command_that_prints_data_has_its_shape_documented(self) -> None:
        assert {" ".join(words) for words in DATA_COMMANDS} | {"sessions --timeline"} == set(documented_shapes())

    def test_report_prints_what_it_wrote_as_one_object(self, tmp_path: Path) -> None:
        result = mcptrace("report", INCIDENTS, "-o", tmp_path / "r.html", "--format", "json")
        assert result.returncode == 0, result.stderr
        written = json.loads(result.stdout)
        assert written["html"] == str(tmp_path / "r.html") and Path(written["html"]).stat().st_size > 0
        assert "latency" in written["figures"] and written["pngs"] == []

    def test_index_prints_what_it_indexed_as_one_object_or_one_csv_row(self, tmp_path: Path) -> None:
        log = tmp_path / "logs" / "mcptrace.log"
        log.parent.mkdir()
        log.write_bytes(INCIDENTS.read_bytes() + b'{"not json\n')
        first = json.loads(mcptrace("index", log.parent, "--format", "json").stdout)
        assert first["rows"] > 1000 and first["indexed"] == [str(log)] and first["reused"] == []
        assert first["corrupt_lines"] == 1
        again = list(csv.DictReader(io.StringIO(mcptrace("index", log.parent, "--format", "csv").stdout)))
        assert len(again) == 1 and again[0]["rows"] == str(first["rows"])
        assert json.loads(again[0]["reused"]) == [str(log)] and json.loads(again[0]["indexed"]) == []

    def test_token_list_as_json_and_csv_never_prints_a_token(self, tmp_path: Path) -> None:
        store = tmp_path / "tokens.json"
        added = mcptrace("token", "add", "agent-7", "--tenant", "acme", "--tool", "ping", "--ttl", "1h",
                         "--store", store)
        assert added.returncode == 0, added.stderr
        token = added.stdout.strip().splitlines()[-1]
        assert mcptrace("token", "add", "reporter", "--tenant", "acme", "--store", store).returncode == 0
        listed = mcptrace("token", "list", "--store", store, "--format", "json")
        rows = json.loads(listed.stdout)
        assert [(r["caller_id"], r["tenant"], r["tools"]) for r in rows] == [
            ("agent-7", "acme", ["ping"]), ("reporter", "acme", None)]
        assert rows[0]["expires_at"].endswith("Z") and rows[1]["expires_at"] is None
        as_csv = mcptrace("token", "list", "--store", store, "--format", "csv").stdout
        assert as_csv.splitlines()[0] == "caller_id,tenant,key,tools,expires_at"
        assert token not in listed.stdout + as_csv

    def test_sessions_timeline_reads_in_the_order_things_happened(self) -> None:
        events = json.loads(mcptrace("sessions", "--timeline", INCIDENTS, "--format", "json").stdout)
        times = [e["time"] for e in events]
        assert times == sorted(times)
        kinds = [e["kind"] for e in events]
        # The sample log opens with a server start and ends with its stop.
        assert kinds[0] == "start" and kinds[-1] == "stop" and "restart" not in kinds
        auth = next(e for e in events if e["kind"] == "auth_failures")
        first_failure = first_line_of(event="request_refused", refusal_reason="unauthenticated")["timestamp"]
        stamped = datetime.fromisoformat(first_failure.replace("Z", "+00:00"))
        assert auth["time"] == stamped.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the first failure, not its minute


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_server(tmp_path_factory.mktemp("gate")) as proc:
        yield proc


class TestGate:
    def test_the_report_gives_the_clients_start_up_apart_from_the_steps(self, plain_server: RunningProcess) -> None:
        report = json.loads(mcptrace("gate", plain_server.url, "--format", "json").stdout)
        assert report["ok"] is True
        # A fresh process pays for the SDK client's JSON Schema machinery once, before the first step.
        assert report["client_import_ms"] > 0
        assert [s["name"] for s in report["steps"]] == ["initialize", "initialized", "list_tools", "tool"]

    def test_the_start_up_is_paid_once_per_process(self, plain_server: RunningProcess) -> None:
        code = (
            "import sys, anyio\n"
            "from mcptrace.gate import run_gate\n"
            "for _ in range(2):\n"
            "    r = anyio.run(run_gate, sys.argv[1])\n"
            "    print(r.ok, r.client_import_ms > 0)\n"
        )
        result = subprocess.run([sys.executable, "-c", code, plain_server.url], capture_output=True, text=True,
                                env=subprocess_env(), timeout=120)
        assert result.stdout.split("\n")[:2] == ["True True", "True False"], result.stderr

    def test_json_is_still_accepted_and_csv_gives_a_row_per_step(self, plain_server: RunningProcess) -> None:
        legacy = json.loads(mcptrace("gate", plain_server.url, "--json").stdout)
        assert legacy["ok"] is True and "client_import_ms" in legacy
        rows = list(csv.DictReader(io.StringIO(mcptrace("gate", plain_server.url, "--format", "csv").stdout)))
        assert [(r["name"], r["ok"]) for r in rows] == [
            ("initialize", "True"), ("initialized", "True"), ("list_tools", "True"), ("tool", "True")]
        assert all(r["url"] == plain_server.url for r in rows)

    def test_the_table_says_the_start_up_is_not_counted(self, plain_server: RunningProcess) -> None:
        result = mcptrace("gate", plain_server.url)
        assert result.returncode == 0
        verdict = result.stdout.strip().splitlines()[-1]
        assert verdict.startswith(f"PASS {plain_server.url}") and "client start-up" in verdict
