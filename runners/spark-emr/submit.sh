#!/usr/bin/env bash
# Bounded beam-rtbf jobs on EMR (Spark): upload what the bootstrap installs, then add steps.
#
#   runners/spark-emr/submit.sh [--dry-run] upload TF_OUTPUTS_JSON WHEEL
#       the bootstrap script, rtbf-job.sh, the beam-rtbf wheel and the Terraform outputs to
#       s3://ARTIFACTS/bootstrap/ (before the cluster starts: its bootstrap action reads them)
#   runners/spark-emr/submit.sh [--dry-run] run|purge TF_OUTPUTS_JSON [beam-rtbf flags...]
#       two EMR steps: write the Spark job jar (SparkRunner, --output_executable_path), then
#       spark-submit it; waits for both and prints their state
#
# Spark runs bounded jobs only (Beam's portable Spark runner has no Python streaming): give
# file or s3:// sources to `run`, e.g. --sessions='s3://bucket/backfill/*.jsonl'. The streaming
# job runs on Flink (runners/flink-k8s). --dry-run prints every command and the steps instead.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/../lib.sh"

usage() { sed -n '2,15p' "$0" >&2; exit 2; }
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
[ $# -ge 2 ] || usage
ACTION="$1"; TF_OUTPUTS="$2"; shift 2
export DRY_RUN
REGION="$(tf_output "$TF_OUTPUTS" aws_region)"
ARTIFACTS="s3://$(tf_output "$TF_OUTPUTS" artifacts_bucket)/bootstrap"

case "$ACTION" in
  upload)
    [ $# -eq 1 ] || usage
    wheel="$1"
    case "$(basename "$wheel")" in beam_rtbf-*.whl) ;; *) echo "not a beam-rtbf wheel: $wheel" >&2; exit 2 ;; esac
    [ "$DRY_RUN" = 1 ] || [ -f "$wheel" ] || { echo "no such file: $wheel" >&2; exit 2; }
    run aws s3 cp --region "$REGION" "$HERE/bootstrap.sh" "$ARTIFACTS/install-beam-rtbf.sh"
    run aws s3 cp --region "$REGION" "$HERE/rtbf-job.sh" "$ARTIFACTS/rtbf-job.sh"
    run aws s3 rm --region "$REGION" --recursive "$ARTIFACTS/wheels/"
    run aws s3 cp --region "$REGION" "$wheel" "$ARTIFACTS/wheels/$(basename "$wheel")"
    run aws s3 cp --region "$REGION" "$TF_OUTPUTS" "$ARTIFACTS/tf.json"
    ;;
  run|purge)
    CLUSTER="$(tf_output "$TF_OUTPUTS" emr_cluster_id)"
    export JOB="$ACTION" STAMP="${STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}"
    steps="$(render "$HERE/steps.json" | python3 -c '
import json, sys
steps = json.load(sys.stdin)
steps[0]["Args"] += sys.argv[1:]  # the beam-rtbf flags go to the jar-writing step
print(json.dumps(steps, indent=2))' "$@")"
    if [ "$DRY_RUN" = 1 ]; then
      if command -v beam-rtbf >/dev/null 2>&1; then
        # What the first step resolves on the primary node (same profile, same outputs).
        beam-rtbf "$JOB" --runner=spark --tf_outputs="$TF_OUTPUTS" \
          --output_executable_path="/mnt/rtbf/jobs/$JOB-$STAMP.jar" "$@" --dry-run
      fi
      echo "steps:"
      echo "$steps"
      run aws emr add-steps --region "$REGION" --cluster-id "$CLUSTER" --steps "<the steps above>"
      echo "+ aws emr wait step-complete --region $REGION --cluster-id $CLUSTER --step-id STEP  (each step)"
      exit 0
    fi
    ids="$(aws emr add-steps --region "$REGION" --cluster-id "$CLUSTER" --steps "$steps" \
            --query 'StepIds' --output text)"
    status=0
    for id in $ids; do
      aws emr wait step-complete --region "$REGION" --cluster-id "$CLUSTER" --step-id "$id" || status=1
      aws emr describe-step --region "$REGION" --cluster-id "$CLUSTER" --step-id "$id" \
        --query 'Step.[Name,Status.State,Status.FailureDetails.Reason]' --output text
    done
    exit "$status"
    ;;
  *) usage ;;
esac
