# The deletion registry's Redis: an ElastiCache replication group with TLS, AUTH, KMS encryption
# at rest, automatic failover across AZs, snapshots, and its AUTH token in Secrets Manager.

module "kms" {
  source            = "../kms_key"
  alias             = "${var.name}-redis"
  description       = "${var.name}: Redis at rest, its auth-token secret and logs"
  log_group_pattern = "/aws/elasticache/${var.name}/*"
  tags              = var.tags
}

resource "aws_secretsmanager_secret" "auth" {
  #checkov:skip=CKV2_AWS_57:rotating an ElastiCache AUTH token needs a coordinated ModifyReplicationGroup (auth_token_update_strategy ROTATE then SET) and a pipeline restart; done as an operation, not a Lambda
  name                    = "${var.name}/redis-auth-token"
  description             = "AUTH token of the ${var.name} Redis (the pipeline's RTBF_REDIS_PASSWORD)"
  kms_key_id              = module.kms.arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "auth" {
  secret_id     = aws_secretsmanager_secret.auth.id
  secret_string = var.auth_token
}

resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-redis"
  description = "Private subnets of the ${var.name} Redis"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_cloudwatch_log_group" "redis" {
  for_each          = toset(["slow-log", "engine-log"])
  name              = "/aws/elasticache/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.kms.arn
  tags              = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = var.name
  description          = "beam-rtbf deletion registry"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = 6379
  num_cache_clusters   = var.num_cache_clusters

  automatic_failover_enabled = true
  multi_az_enabled           = true

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [var.security_group_id]

  at_rest_encryption_enabled = true
  kms_key_id                 = module.kms.arn
  transit_encryption_enabled = true
  auth_token                 = var.auth_token

  snapshot_retention_limit   = var.snapshot_retention_days
  snapshot_window            = "03:00-04:00"
  maintenance_window         = "sun:05:00-sun:06:00"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  dynamic "log_delivery_configuration" {
    for_each = aws_cloudwatch_log_group.redis
    content {
      destination      = log_delivery_configuration.value.name
      destination_type = "cloudwatch-logs"
      log_format       = "json"
      log_type         = log_delivery_configuration.key
    }
  }

  tags = var.tags
}
