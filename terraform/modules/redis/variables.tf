variable "name" {
  description = "Name of the replication group (and prefix of its subnet group, key and secret)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.name))
    error_message = "name must be 2-40 characters of lowercase letters, digits and hyphens, starting with a letter (ElastiCache naming)."
  }
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^[67]\\.[0-9x]+$", var.engine_version))
    error_message = "engine_version must be a Redis 6 or 7 version such as 7.1 (TLS and AUTH tokens need 6 or later)."
  }
}

variable "node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.node_type))
    error_message = "node_type must be an ElastiCache node type such as cache.t4g.small."
  }
}

variable "num_cache_clusters" {
  description = "Nodes in the replication group (one primary, the rest replicas in other AZs); at least 2 for automatic failover."
  type        = number
  default     = 2

  validation {
    condition     = var.num_cache_clusters >= 2 && var.num_cache_clusters <= 6 && floor(var.num_cache_clusters) == var.num_cache_clusters
    error_message = "num_cache_clusters must be a whole number between 2 and 6 (automatic failover and multi-AZ need a replica)."
  }
}

variable "snapshot_retention_days" {
  description = "Days of daily snapshots kept. Snapshots hold the deletion registry (the subject ids of erasure requests), needed to prove erasure; keep them bounded."
  type        = number
  default     = 7

  validation {
    condition     = var.snapshot_retention_days >= 1 && var.snapshot_retention_days <= 35 && floor(var.snapshot_retention_days) == var.snapshot_retention_days
    error_message = "snapshot_retention_days must be a whole number between 1 and 35."
  }
}

variable "auth_token" {
  description = "Redis AUTH token (16-128 printable characters, no spaces, '/', '\"' or '@'). Stored in the Secrets Manager secret this module creates; the pipeline reads it into RTBF_REDIS_PASSWORD. Pass it with TF_VAR_redis_auth_token, never in a committed file."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.auth_token) >= 16 && length(var.auth_token) <= 128 && can(regex("^[!#-.0-?A-~]+$", var.auth_token))
    error_message = "auth_token must be 16-128 printable ASCII characters without spaces, '/', '\"' or '@'."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the cache nodes (at least two AZs)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must hold at least two subnets (multi-AZ)."
  }
}

variable "security_group_id" {
  description = "Security group of the cache nodes (admits the pipeline only)."
  type        = string
}

variable "log_retention_days" {
  description = "Days the Redis slow and engine logs are kept in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365)."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted auth-token secret can be restored (0: delete at once)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
