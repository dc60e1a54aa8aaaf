#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs pytest.
#   scripts/test.sh                 everything (what CI runs)
#   scripts/test.sh -m "not slow"   the quick subset, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Real servers the integration tests start (Debian packages).
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
# Beam's job service binds every interface: the portable tests run it in a network namespace.
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
# The real Kafka broker (tests/integration/test_kafka_broker.py) runs on Java 17, its jars fetched by Maven.
command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"
command -v mvn >/dev/null 2>&1 || missing="$missing maven"
# Headless Chromium for the dashboard's browser tests (driven by Playwright through executable_path).
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
# A real PostgreSQL server for the analytics sink tests (initdb in a temporary folder; Debian keeps the
# server binaries in /usr/lib/postgresql/N/bin, off PATH).
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# kinesalite: a local Kinesis endpoint (npm), kept out of the source tree's history in .tools/.
if [ ! -f .tools/node_modules/kinesalite/package.json ]; then
  npm install --silent --no-audit --no-fund --prefix .tools kinesalite@3.3.3 >/dev/null
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
# Beam's Flink and Spark job servers and Java KafkaIO (expansion service + worker pool), fetched once into
# ~/.cache/beam-rtbf (tests/integration/test_engines.py, test_kafka_xlang.py).
"$PYTHON" -m beam_rtbf.job_servers flink spark kafka-expansion >/dev/null
# Apache Kafka (KRaft broker) jars: org.apache.kafka:kafka_2.13 and its dependencies, resolved by mvn into
# .tools/kafka-<version>/lib once (a no-op when there), so the broker tests never download at test time.
"$PYTHON" -m beam_rtbf.testing.kafka_broker fetch >/dev/null
# Prism, Beam's Go runner (tests/integration/test_prism.py, `beam-rtbf run --runner prism`): built
# from the Go module at the SDK's version into .tools/bin/prism (git-ignored; found there by
# --runner prism). Needs Go >= 1.26 (the module's go.mod); without Go the Prism tests skip.
BEAM_VERSION="$("$PYTHON" -c 'from apache_beam.version import __version__; print(__version__)')"
if [ ! -x .tools/bin/prism ] && command -v go >/dev/null 2>&1; then
  GOBIN="$PWD/.tools/bin" go install -buildvcs=false "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_VERSION" \
    || echo "scripts/test.sh: could not build prism; the Prism tests will skip" >&2
fi
# checkov (terraform/ checks) in a venv of its own: it would downgrade boto3 beside Beam.
if [ ! -x .tools/checkov/bin/checkov ]; then
  "$PYTHON" -m venv .tools/checkov
  .tools/checkov/bin/pip install --quiet --disable-pip-version-check 'checkov==3.2.469'
fi
exec "$PYTHON" -m pytest "$@"
