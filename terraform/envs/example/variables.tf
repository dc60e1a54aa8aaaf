variable "aws_region" {
  description = "AWS region of everything."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must be a region name such as eu-west-1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (and of the bucket names: make it globally unique, e.g. with the account id)."
  type        = string
  default     = "beam-rtbf"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-24 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones used."
  type        = number
  default     = 3
}

variable "nat_gateway_count" {
  description = "NAT gateways (1 shared, or one per AZ)."
  type        = number
  default     = 1
}

variable "stream_retention_hours" {
  description = "Kinesis retention: how long a stream still holds an erased user's records (24..168)."
  type        = number
  default     = 24
}

variable "stream_mode" {
  description = "Kinesis capacity mode: ON_DEMAND or PROVISIONED."
  type        = string
  default     = "ON_DEMAND"
}

variable "enable_msk" {
  description = "Create MSK (Kafka) as the alternative input."
  type        = bool
  default     = false
}

variable "noncurrent_version_days" {
  description = "Days until S3 expires noncurrent versions (what a purge deleted), 1..30."
  type        = number
  default     = 7
}

variable "redis_auth_token" {
  description = "Redis AUTH token: give it as TF_VAR_redis_auth_token, never in a committed file."
  type        = string
  sensitive   = true
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "emr_release_label" {
  description = "EMR release."
  type        = string
  default     = "emr-7.5.0"
}

variable "emr_core_instance_count" {
  description = "EMR core nodes."
  type        = number
  default     = 2
}

variable "emr_termination_protection" {
  description = "EMR termination protection (turn off before destroy)."
  type        = bool
  default     = true
}

variable "kubernetes_version" {
  description = "EKS version."
  type        = string
  default     = "1.31"
}

variable "flink_namespace" {
  description = "Namespace of the Flink job."
  type        = string
  default     = "beam-rtbf"
}

variable "flink_service_account" {
  description = "Service account of the Flink pods."
  type        = string
  default     = "flink"
}
