#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
#
# The package and its test dependencies go into a virtual environment made anew on every run
# (.ci/venv), so that what pip resolves today is what is tested, never a package left on the machine.
# Later runs of single tests can use it directly: .ci/venv/bin/python -m pytest tests/test_x.py
# (iproute2 brings `ip`, which the phoenix test uses to bring up loopback in its own network namespace;
# prometheus brings promtool too, for the alert rules; lnav reads the sample logs with the shipped format;
# openjdk-17-jre-headless runs Spark for the fleet engines test; python3-venv makes the virtual environments.)
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in nginx caddy redis-server ripgrep chromium openssl iproute2 prometheus lnav openjdk-17-jre-headless python3-venv; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  command -v npm >/dev/null 2>&1 || missing+=(npm)  # any npm will do: the conformance suite brings its own Node 22
  if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python3 -m venv --clear .ci/venv
.ci/venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.ci/venv/bin:$PATH"
bash scripts/install-conformance.sh

# playwright-core drives Debian's Chromium in the notebook browser test (project-local, gitignored)
if command -v npm >/dev/null 2>&1 && [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm install --prefix tests/browser --no-audit --no-fund --silent >/dev/null
fi
# MCP servers written elsewhere and the TypeScript SDK client, for the proxy tests (pinned in
# tests/node/package-lock.json; project-local, gitignored)
if command -v npm >/dev/null 2>&1 && ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-lock; then
  npm ci --prefix tests/node --no-audit --no-fund --silent >/dev/null
  cp tests/node/package-lock.json tests/node/node_modules/.installed-lock
fi
# arize-phoenix, a third-party OTLP receiver (traces over gRPC and HTTP), in a virtual environment
# of its own so that its many dependencies never meet the package's (project-local, gitignored)
if [ ! -x .ci/phoenix/bin/phoenix ]; then
  python3 -m venv .ci/phoenix
  .ci/phoenix/bin/python -m pip install -q --disable-pip-version-check arize-phoenix
fi
python -m ruff check mcptrace tests bench
python -m mypy mcptrace
python -m pytest "$@"
