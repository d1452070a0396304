#!/usr/bin/env bash
# One entry point for a fresh machine: creates/refreshes .venv, then runs what you ask.
#   bash deploy/dev.sh demo [ARGS]   the streaming demo (embedded broker unless KAFKA_BOOTSTRAP_SERVERS)
#   bash deploy/dev.sh test [ARGS]   the whole test suite (pytest ARGS)
#   bash deploy/dev.sh setup         only the set-up
#   bash deploy/dev.sh newsflow ...  any newsflow command
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "newsflow needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# Re-install only when the dependency list changed: the stamp is the hash of pyproject.toml.
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.newsflow-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "== setting up .venv (dependencies changed or first run)" >&2
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  echo "$stamp" > .venv/.newsflow-stamp
fi

# The metrics tests and the demo's Prometheus check need Debian's prometheus/promtool.
need_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing Debian's prometheus (for promtool and the metrics tests)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
      || echo "warning: could not install prometheus; its tests will be skipped" >&2
  else
    echo "warning: prometheus/promtool missing and not root; their tests will be skipped" >&2
  fi
}

cmd=${1:-test}
shift || true
case "$cmd" in
  setup) need_prometheus ;;
  test) need_prometheus; exec .venv/bin/python -m pytest "$@" ;;
  demo) exec .venv/bin/newsflow demo "$@" ;;
  newsflow) exec .venv/bin/newsflow "$@" ;;
  *) echo "usage: bash deploy/dev.sh {setup|test|demo|newsflow} [ARGS]" >&2; exit 2 ;;
esac
