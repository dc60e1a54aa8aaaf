variable "name" {
  description = "Name prefix of the streams (the streams are NAME-sessions and NAME-requests)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "retention_hours" {
  description = <<-EOT
    Hours a Kinesis stream keeps its records (24..168). This bounds how long a stream still
    holds an erased user's records after the request: records cannot be deleted from a stream,
    they age out. The purge manifests report this horizon per request, so keep it short
    (168 hours = 7 days, well inside the GDPR one-month deadline).
  EOT
  type        = number
  default     = 24

  validation {
    condition     = var.retention_hours >= 24 && var.retention_hours <= 168 && floor(var.retention_hours) == var.retention_hours
    error_message = "retention_hours must be a whole number of hours between 24 and 168: a stream may hold an erased user's records for that long, and longer retention is not allowed here."
  }
}

variable "stream_mode" {
  description = "Kinesis capacity mode: ON_DEMAND, or PROVISIONED with shard_count shards per stream."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "PROVISIONED"], var.stream_mode)
    error_message = "stream_mode must be ON_DEMAND or PROVISIONED."
  }
}

variable "sessions_shard_count" {
  description = "Shards of the sessions stream in PROVISIONED mode."
  type        = number
  default     = 2

  validation {
    condition     = var.sessions_shard_count >= 1 && var.sessions_shard_count <= 500 && floor(var.sessions_shard_count) == var.sessions_shard_count
    error_message = "sessions_shard_count must be a whole number between 1 and 500."
  }
}

variable "requests_shard_count" {
  description = "Shards of the requests stream in PROVISIONED mode (erasure requests are few)."
  type        = number
  default     = 1

  validation {
    condition     = var.requests_shard_count >= 1 && var.requests_shard_count <= 50 && floor(var.requests_shard_count) == var.requests_shard_count
    error_message = "requests_shard_count must be a whole number between 1 and 50."
  }
}

variable "enable_msk" {
  description = "Also create an MSK (Kafka) cluster as the alternative to Kinesis."
  type        = bool
  default     = false
}

variable "msk_kafka_version" {
  description = "Kafka version of the MSK cluster."
  type        = string
  default     = "3.6.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+(\\.[a-z0-9]+)?$", var.msk_kafka_version))
    error_message = "msk_kafka_version must look like 3.6.0."
  }
}

variable "msk_broker_count" {
  description = "Number of MSK brokers: a multiple of the number of subnets (one per AZ)."
  type        = number
  default     = 3

  validation {
    condition     = var.msk_broker_count >= 2 && var.msk_broker_count <= 30 && floor(var.msk_broker_count) == var.msk_broker_count
    error_message = "msk_broker_count must be a whole number between 2 and 30."
  }
}

variable "msk_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.m5.large"

  validation {
    condition     = can(regex("^kafka\\.[a-z0-9]+\\.[a-z0-9]+$", var.msk_instance_type))
    error_message = "msk_instance_type must be an MSK broker type such as kafka.m5.large."
  }
}

variable "msk_volume_size_gb" {
  description = "EBS volume per broker, in GB."
  type        = number
  default     = 100

  validation {
    condition     = var.msk_volume_size_gb >= 1 && var.msk_volume_size_gb <= 16384
    error_message = "msk_volume_size_gb must be between 1 and 16384."
  }
}

variable "msk_client_auth" {
  description = "MSK client authentication: iam (SASL/IAM, port 9098) or scram (SASL/SCRAM, port 9096). Unauthenticated access is off."
  type        = string
  default     = "iam"

  validation {
    condition     = contains(["iam", "scram"], var.msk_client_auth)
    error_message = "msk_client_auth must be iam or scram."
  }
}

variable "msk_log_retention_days" {
  description = "Days the MSK broker logs are kept in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731], var.msk_log_retention_days)
    error_message = "msk_log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731)."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the MSK brokers (one per AZ); unused without MSK."
  type        = list(string)
  default     = []
}

variable "msk_security_group_id" {
  description = "Security group of the MSK brokers; unused without MSK."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
