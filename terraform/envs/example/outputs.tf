# These names are read by the runner profiles (beam_rtbf/profiles/*.yaml, ${tf.NAME}): keep them.

output "aws_region" {
  description = "Region of the deployment."
  value       = var.aws_region
}

output "sessions_stream_name" {
  description = "Kinesis stream of the sessions."
  value       = module.streams.sessions_stream_name
}

output "requests_stream_name" {
  description = "Kinesis stream of the erasure requests."
  value       = module.streams.requests_stream_name
}

output "msk_bootstrap_brokers_tls" {
  description = "MSK TLS bootstrap brokers; empty string when MSK is disabled."
  value       = module.streams.msk_bootstrap_brokers_tls
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the deletion registry's Redis (TLS: rediss://)."
  value       = module.redis.primary_endpoint
}

output "redis_port" {
  description = "Redis port."
  value       = module.redis.port
}

output "redis_auth_secret_arn" {
  description = "Secrets Manager secret of the Redis AUTH token (-> RTBF_REDIS_PASSWORD)."
  value       = module.redis.auth_secret_arn
}

output "archive_bucket" {
  description = "Bucket of the raw archive."
  value       = module.storage.bucket_names["archive"]
}

output "manifests_bucket" {
  description = "Bucket of the purge manifests."
  value       = module.storage.bucket_names["manifests"]
}

output "analytics_bucket" {
  description = "Bucket of the clean analytics."
  value       = module.storage.bucket_names["analytics"]
}

output "receipts_bucket" {
  description = "Bucket of the purge receipts."
  value       = module.storage.bucket_names["receipts"]
}

output "artifacts_bucket" {
  description = "Bucket of EMR logs, the bootstrap script and jars."
  value       = module.storage.bucket_names["artifacts"]
}

output "emr_cluster_id" {
  description = "EMR cluster of the SparkRunner."
  value       = module.emr.cluster_id
}

output "eks_cluster_name" {
  description = "EKS cluster of the FlinkRunner."
  value       = module.eks.cluster_name
}

output "flink_namespace" {
  description = "Namespace of the Flink job."
  value       = module.eks.flink_namespace
}

output "flink_service_account" {
  description = "Service account of the Flink pods."
  value       = module.eks.flink_service_account
}

output "flink_service_account_role_arn" {
  description = "IRSA role of the Flink service account."
  value       = module.eks.flink_service_account_role_arn
}

output "pipeline_role_arn" {
  description = "The pipeline role (EMR instance profile)."
  value       = module.iam.pipeline_role_arn
}
