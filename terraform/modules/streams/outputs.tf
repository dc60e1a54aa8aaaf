output "sessions_stream_name" {
  description = "Name of the Kinesis sessions stream."
  value       = aws_kinesis_stream.this["sessions"].name
}

output "requests_stream_name" {
  description = "Name of the Kinesis erasure-requests stream."
  value       = aws_kinesis_stream.this["requests"].name
}

output "stream_arns" {
  description = "ARNs of the two Kinesis streams."
  value       = [for s in aws_kinesis_stream.this : s.arn]
}

output "retention_hours" {
  description = "How long the streams hold a record, so an erased user's records (the manifests' stream horizon)."
  value       = var.retention_hours
}

output "kms_key_arn" {
  description = "KMS key encrypting the streams (and MSK at rest)."
  value       = module.kms.arn
}

output "msk_cluster_arn" {
  description = "ARN of the MSK cluster; empty when MSK is disabled."
  value       = var.enable_msk ? aws_msk_cluster.this[0].arn : ""
}

output "msk_bootstrap_brokers_tls" {
  description = "TLS bootstrap brokers of the MSK cluster for the chosen client auth (SASL/IAM or SASL/SCRAM over TLS); empty when MSK is disabled."
  value = var.enable_msk ? (
    var.msk_client_auth == "iam" ? aws_msk_cluster.this[0].bootstrap_brokers_sasl_iam : aws_msk_cluster.this[0].bootstrap_brokers_sasl_scram
  ) : ""
}
