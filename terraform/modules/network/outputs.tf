output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets, one per AZ (pipeline, Redis, MSK, EMR, EKS)."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets, one per AZ (NAT gateways only)."
  value       = aws_subnet.public[*].id
}

output "availability_zones" {
  description = "The AZs used."
  value       = local.azs
}

output "pipeline_security_group_id" {
  description = "Security group of the pipeline workers (EMR instances, EKS nodes)."
  value       = aws_security_group.pipeline.id
}

output "redis_security_group_id" {
  description = "Security group of the Redis replication group."
  value       = aws_security_group.redis.id
}

output "msk_security_group_id" {
  description = "Security group of the MSK brokers."
  value       = aws_security_group.msk.id
}

output "eks_cluster_security_group_id" {
  description = "Additional security group of the EKS control plane."
  value       = aws_security_group.eks_cluster.id
}

output "emr_master_security_group_id" {
  description = "EMR managed security group of the primary node."
  value       = aws_security_group.emr_master.id
}

output "emr_core_security_group_id" {
  description = "EMR managed security group of the core and task nodes."
  value       = aws_security_group.emr_core.id
}

output "emr_service_security_group_id" {
  description = "EMR service access security group (private subnets)."
  value       = aws_security_group.emr_service.id
}

output "flow_log_group_name" {
  description = "CloudWatch log group of the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow.name
}
