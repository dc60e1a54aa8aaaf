output "primary_endpoint" {
  description = "Primary endpoint address of the replication group (use rediss:// — TLS is on)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis port."
  value       = aws_elasticache_replication_group.this.port
}

output "auth_secret_arn" {
  description = "Secrets Manager secret holding the AUTH token (the secret string is the token)."
  value       = aws_secretsmanager_secret.auth.arn
}

output "kms_key_arn" {
  description = "KMS key of Redis at rest and of the auth-token secret."
  value       = module.kms.arn
}
