#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs pytest.
#   scripts/test.sh                 everything (what CI runs)
#   scripts/test.sh -m "not slow"   the quick subset, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec "$PYTHON" -m pytest "$@"
