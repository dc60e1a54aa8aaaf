output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint (private unless endpoint_public_access)."
  value       = aws_eks_cluster.this.endpoint
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (IRSA)."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "flink_namespace" {
  description = "Namespace of the Flink job."
  value       = var.flink_namespace
}

output "flink_service_account" {
  description = "Service account of the Flink pods."
  value       = var.flink_service_account
}

output "flink_service_account_role_arn" {
  description = "Role the Flink service account assumes (annotate it with eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.flink.arn
}
