#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs pytest.
#   scripts/test.sh                 everything (what CI runs)
#   scripts/test.sh -m "not slow"   the quick subset, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Real servers the integration tests start (Debian packages).
if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec "$PYTHON" -m pytest "$@"
