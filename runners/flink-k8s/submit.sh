#!/usr/bin/env bash
# Deploy the Flink session cluster and submit the beam-rtbf streaming job to it.
#
#   runners/flink-k8s/submit.sh [--dry-run] TF_OUTPUTS_JSON IMAGE
#
# TF_OUTPUTS_JSON: `terraform output -json` of terraform/envs/example; IMAGE: the image
# runners/flink-k8s/Dockerfile built, pushed where the EKS nodes can pull it. kubectl must
# point at the cluster (aws eks update-kubeconfig --name "$(terraform output -raw eks_cluster_name)")
# and the Flink Kubernetes Operator must be installed (README.md). RTBF_REDIS_PASSWORD (and
# optionally RTBF_SUBJECT_HASH_KEY) are put in the beam-rtbf-secrets Secret when set.
# --dry-run prints the rendered manifests and every command instead of running them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/../lib.sh"

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
if [ $# -ne 2 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
TF_OUTPUTS="$1"
export DRY_RUN IMAGE="$2"
export AWS_REGION="$(tf_output "$TF_OUTPUTS" aws_region)"
export ARTIFACTS_BUCKET="$(tf_output "$TF_OUTPUTS" artifacts_bucket)"
export FLINK_NAMESPACE="$(tf_output "$TF_OUTPUTS" flink_namespace)"
export FLINK_SERVICE_ACCOUNT="$(tf_output "$TF_OUTPUTS" flink_service_account)"
export FLINK_ROLE_ARN="$(tf_output "$TF_OUTPUTS" flink_service_account_role_arn)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for manifest in serviceaccount flink-deployment submit-job; do
  render "$HERE/$manifest.yaml" > "$WORK/$manifest.yaml"
  if [ "$DRY_RUN" = 1 ]; then
    echo "--- # $manifest.yaml (rendered)"
    cat "$WORK/$manifest.yaml"
  fi
done
echo "..."
if [ "$DRY_RUN" = 1 ] && command -v beam-rtbf >/dev/null 2>&1; then
  # What the submit Job will run, with the options it resolves from the same outputs.
  FLINK_MASTER=http://beam-rtbf-rest:8081 \
    beam-rtbf run --runner=flink --tf_outputs="$TF_OUTPUTS" --job_name=beam-rtbf-streaming --dry-run
fi

NS=(--namespace "$FLINK_NAMESPACE")
run kubectl apply -f "$WORK/serviceaccount.yaml"
if [ -n "${RTBF_REDIS_PASSWORD:-}" ]; then
  secret=(kubectl create secret generic beam-rtbf-secrets "${NS[@]}" --dry-run=client -o yaml
          --from-literal=redis-password="$RTBF_REDIS_PASSWORD")
  [ -z "${RTBF_SUBJECT_HASH_KEY:-}" ] || secret+=(--from-literal=subject-hash-key="$RTBF_SUBJECT_HASH_KEY")
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ kubectl create secret generic beam-rtbf-secrets ... | kubectl apply -f -   (values masked)"
  else
    "${secret[@]}" | kubectl apply -f -
  fi
fi
if [ "$DRY_RUN" = 1 ]; then
  echo "+ kubectl create configmap beam-rtbf-tf-outputs --from-file=tf.json=$TF_OUTPUTS ... | kubectl apply -f -"
else
  kubectl create configmap beam-rtbf-tf-outputs "${NS[@]}" --from-file=tf.json="$TF_OUTPUTS" \
    --dry-run=client -o yaml | kubectl apply -f -
fi
run kubectl apply -f "$WORK/flink-deployment.yaml"
run kubectl wait "${NS[@]}" flinkdeployment/beam-rtbf --timeout=10m \
  --for=jsonpath='{.status.jobManagerDeploymentStatus}'=READY
run kubectl delete job beam-rtbf-submit "${NS[@]}" --ignore-not-found
run kubectl apply -f "$WORK/submit-job.yaml"
run kubectl wait "${NS[@]}" job/beam-rtbf-submit --for=condition=complete --timeout=15m
run kubectl logs "${NS[@]}" job/beam-rtbf-submit
