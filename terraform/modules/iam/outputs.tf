output "pipeline_policy_arn" {
  description = "The pipeline's least-privilege policy (also attached to the Flink service-account role)."
  value       = aws_iam_policy.pipeline.arn
}

output "pipeline_policy_json" {
  description = "The pipeline policy document (for review and tests)."
  value       = data.aws_iam_policy_document.pipeline.json
}

output "pipeline_role_arn" {
  description = "The pipeline role (EMR instance profile)."
  value       = aws_iam_role.pipeline.arn
}

output "pipeline_role_name" {
  description = "Name of the pipeline role."
  value       = aws_iam_role.pipeline.name
}

output "pipeline_instance_profile_arn" {
  description = "Instance profile of the pipeline role (EMR ec2_attributes)."
  value       = aws_iam_instance_profile.pipeline.arn
}

output "emr_service_role_arn" {
  description = "EMR service role."
  value       = aws_iam_role.emr_service.arn
}

output "eks_cluster_role_arn" {
  description = "EKS cluster role."
  value       = aws_iam_role.eks_cluster.arn
}

output "eks_node_role_arn" {
  description = "EKS node role."
  value       = aws_iam_role.eks_node.arn
}
