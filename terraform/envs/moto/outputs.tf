output "aws_region" {
  description = "Region of the local endpoint."
  value       = "us-east-1"
}

output "vpc_id" {
  description = "VPC ID."
  value       = module.network.vpc_id
}

output "sessions_stream_name" {
  description = "Kinesis sessions stream."
  value       = module.streams.sessions_stream_name
}

output "requests_stream_name" {
  description = "Kinesis requests stream."
  value       = module.streams.requests_stream_name
}

output "bucket_names" {
  description = "Bucket per kind."
  value       = module.storage.bucket_names
}

output "access_log_bucket" {
  description = "Access-log bucket."
  value       = module.storage.access_log_bucket
}

output "pipeline_role_arn" {
  description = "The pipeline role."
  value       = module.iam.pipeline_role_arn
}

output "pipeline_policy_arn" {
  description = "The pipeline policy."
  value       = module.iam.pipeline_policy_arn
}

output "eks_cluster_name" {
  description = "EKS cluster name (empty without EKS)."
  value       = var.enable_eks ? module.eks[0].cluster_name : ""
}

output "flink_service_account_role_arn" {
  description = "IRSA role of the Flink service account (empty without EKS)."
  value       = var.enable_eks ? module.eks[0].flink_service_account_role_arn : ""
}
