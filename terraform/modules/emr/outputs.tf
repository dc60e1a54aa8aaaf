output "cluster_id" {
  description = "ID of the EMR cluster (j-...)."
  value       = aws_emr_cluster.this.id
}

output "master_public_dns" {
  description = "DNS name of the primary node (private subnet: reachable inside the VPC only)."
  value       = aws_emr_cluster.this.master_public_dns
}

output "security_configuration" {
  description = "Name of the EMR security configuration."
  value       = aws_emr_security_configuration.this.name
}
