"""The README and docs/ show what the commands print: every `$ python -m mcptrace ...` example that
reads `sample_logs/` and shows its output is run, and its output must be the one shown."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mcptrace.testing import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROMPT = "$ python -m mcptrace "


def examples() -> list[tuple[str, str, str]]:
    """(where, command, output shown) for each shown command that reads the sample logs."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```console\n(.*?)^```", doc.read_text(), flags=re.S | re.M):
            lines = block.splitlines(keepends=True)
            for i, line in enumerate(lines):
                if not line.startswith(PROMPT) or "sample_logs/" not in line:
                    continue
                output = []
                for follow in lines[i + 1:]:
                    if follow.startswith("$ "):
                        break
                    output.append(follow)
                if output:
                    found.append((doc.name, line[2:].strip(), "".join(output)))
    return found


def test_the_readme_shows_commands_on_the_sample_logs() -> None:
    shown = " ".join(command for _, command, _ in examples())
    assert "mcptrace incidents" in shown and "mcptrace chain" in shown


@pytest.mark.parametrize(("doc", "command", "shown"), examples(), ids=lambda v: v if "\n" not in v else "")
def test_an_example_prints_what_the_docs_show(doc: str, command: str, shown: str) -> None:
    argv = shlex.split(command, comments=True)
    assert argv[:3] == ["python", "-m", "mcptrace"]
    done = subprocess.run(
        [sys.executable, *argv[1:], "--no-index"], cwd=ROOT, env=subprocess_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown, f"{doc}: `{command}` prints something else now; paste its output"
