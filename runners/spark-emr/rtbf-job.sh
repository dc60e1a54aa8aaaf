#!/usr/bin/env bash
# rtbf-job run|purge [beam-rtbf flags]: the first EMR step of a bounded beam-rtbf job, on the
# primary node. It resolves the spark runner profile from the Terraform outputs the bootstrap
# was given and writes the Spark job jar (--output_executable_path); the next step runs that jar
# with spark-submit. Installed by bootstrap.sh as /opt/beam-rtbf/bin/rtbf-job.
set -euo pipefail
PREFIX=/opt/beam-rtbf
command="${1:-}"
case "$command" in
  run|purge) shift ;;
  *) echo "usage: rtbf-job run|purge [beam-rtbf flags]" >&2; exit 2 ;;
esac
. /etc/beam-rtbf/rtbf.env   # ARTIFACTS=s3://BUCKET/bootstrap
mkdir -p /mnt/rtbf/jobs
aws s3 cp --only-show-errors "$ARTIFACTS/tf.json" /mnt/rtbf/tf.json
jar="$(ls "$PREFIX"/jars/beam-runners-spark-3-job-server-*.jar | tail -n 1)"
exec "$PREFIX/bin/with-secrets" "$PREFIX/venv/bin/beam-rtbf" "$command" \
  --runner=spark --tf_outputs=/mnt/rtbf/tf.json --spark_job_server_jar="$jar" "$@"
