#!/usr/bin/env bash
# EMR bootstrap action (every node, before Spark starts): installs beam-rtbf and runs Beam's
# Python SDK worker pool on localhost:50000, where Spark executors start the pipeline's Python
# workers (environment_type EXTERNAL in beam_rtbf/profiles/spark.yaml). On the primary node it
# also installs `rtbf-job`, the EMR step that turns a bounded beam-rtbf job into a Spark jar.
#
# Uploaded by `runners/spark-emr/submit.sh upload` to s3://ARTIFACTS/bootstrap/install-beam-rtbf.sh;
# Terraform (modules/emr) names it as the cluster's bootstrap action with these arguments:
#   --artifacts s3://ARTIFACTS/bootstrap     wheels/ (the beam-rtbf wheel), rtbf-job.sh, tf.json, jars/
#   --secret ENV=SECRET_ARN                  (repeatable) a Secrets Manager secret the workers and
#                                            rtbf-job get as $ENV, e.g. RTBF_REDIS_PASSWORD=arn:...
# Secrets are fetched when a process starts, never written to disk.
set -euo pipefail

ARTIFACTS=""
SECRETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --artifacts) ARTIFACTS="${2%/}"; shift 2 ;;
    --secret) SECRETS+=("$2"); shift 2 ;;
    *) echo "bootstrap: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$ARTIFACTS" in
  s3://*) ;;
  *) echo "bootstrap: --artifacts s3://BUCKET/PREFIX is required" >&2; exit 2 ;;
esac
for secret in "${SECRETS[@]+"${SECRETS[@]}"}"; do
  [[ "$secret" =~ ^[A-Z_][A-Z0-9_]*=arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$ ]] \
    || { echo "bootstrap: --secret must be ENV=SECRET_ARN, got ${secret%%=*}=..." >&2; exit 2; }
done

PREFIX=/opt/beam-rtbf
PYTHON=python3.11   # Beam 2.77 needs Python >= 3.10; Amazon Linux 2023 (EMR 7) ships 3.9 as python3

# 1. Python and the package, in a virtualenv of its own (EMR's own Python stays untouched).
sudo dnf install -y -q "$PYTHON" "$PYTHON-pip"
sudo mkdir -p "$PREFIX/bin" "$PREFIX/jars" /etc/beam-rtbf
sudo "$PYTHON" -m venv "$PREFIX/venv"
WHEELS="$(mktemp -d)"
aws s3 cp --recursive --only-show-errors "$ARTIFACTS/wheels/" "$WHEELS/"
wheel="$(ls "$WHEELS"/beam_rtbf-*.whl)"   # exactly one: `submit.sh upload` replaces the folder
sudo "$PREFIX/venv/bin/pip" install --quiet --no-cache-dir "${wheel}[aws,kafka,redis]"
rm -rf "$WHEELS"

# 2. with-secrets: fetch the configured secrets into the environment, then exec the command.
printf '%s\n' "${SECRETS[@]+"${SECRETS[@]}"}" | sudo tee /etc/beam-rtbf/secrets.conf >/dev/null
echo "ARTIFACTS=$ARTIFACTS" | sudo tee /etc/beam-rtbf/rtbf.env >/dev/null
sudo tee "$PREFIX/bin/with-secrets" >/dev/null <<'SH'
#!/usr/bin/env bash
set -euo pipefail
while IFS='=' read -r name arn; do
  [ -n "$name" ] || continue
  region="$(cut -d: -f4 <<<"$arn")"
  value="$(aws secretsmanager get-secret-value --region "$region" --secret-id "$arn" \
           --query SecretString --output text)"
  export "$name=$value"
done < /etc/beam-rtbf/secrets.conf
exec "$@"
SH
sudo chmod 0755 "$PREFIX/bin/with-secrets"

# 3. The SDK worker pool, as a service that restarts if it dies.
id beam-rtbf >/dev/null 2>&1 || sudo useradd --system --home-dir /var/lib/beam-rtbf --create-home beam-rtbf
sudo tee /etc/systemd/system/beam-rtbf-worker-pool.service >/dev/null <<UNIT
[Unit]
Description=Beam Python SDK worker pool for beam-rtbf (Spark executors connect to localhost:50000)
After=network-online.target
Wants=network-online.target

[Service]
User=beam-rtbf
WorkingDirectory=/var/lib/beam-rtbf
ExecStart=$PREFIX/bin/with-secrets $PREFIX/venv/bin/python -m apache_beam.runners.worker.worker_pool_main --service_port=50000
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
sudo systemctl daemon-reload
sudo systemctl enable --now beam-rtbf-worker-pool.service

# 4. Primary node only: the rtbf-job step and Beam's Spark job-server jar that writes the job jar.
if grep -q '"isMaster": *true' /mnt/var/lib/info/instance.json 2>/dev/null; then
  aws s3 cp --only-show-errors "$ARTIFACTS/rtbf-job.sh" - | sudo tee "$PREFIX/bin/rtbf-job" >/dev/null
  sudo chmod 0755 "$PREFIX/bin/rtbf-job"
  # A jar under ARTIFACTS/jars/ wins (clusters without internet egress); else Beam's resolver.
  sudo aws s3 cp --recursive --only-show-errors "$ARTIFACTS/jars/" "$PREFIX/jars/" || true
  if ! ls "$PREFIX"/jars/beam-runners-spark-3-job-server-*.jar >/dev/null 2>&1; then
    sudo "$PREFIX/venv/bin/python" -c "
from apache_beam.runners.portability.job_server import JavaJarJobServer as J
print(J.local_jar(J.path_to_beam_jar(':runners:spark:3:job-server:shadowJar'), '$PREFIX/jars'))"
  fi
fi
echo "bootstrap: beam-rtbf installed, worker pool on localhost:50000"
