variable "name" {
  description = "Name prefix of the roles and policies."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,38}$", var.name))
    error_message = "name must be 2-39 characters of letters, digits and hyphens, starting with a letter."
  }
}

variable "stream_arns" {
  description = "ARNs of the Kinesis streams the pipeline reads (sessions and requests)."
  type        = list(string)

  validation {
    condition     = length(var.stream_arns) > 0 && alltrue([for a in var.stream_arns : can(regex("^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]{12}:stream/[A-Za-z0-9_.-]+$", a))])
    error_message = "stream_arns must be Kinesis stream ARNs (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)."
  }
}

variable "allow_put_records" {
  description = "Also let the pipeline role write to the streams (the load generator, beam-rtbf generate --to kinesis://...)."
  type        = bool
  default     = false
}

variable "kms_key_arns" {
  description = "KMS keys the pipeline decrypts and encrypts with (streams, buckets, Redis secret)."
  type        = list(string)

  validation {
    condition     = alltrue([for a in var.kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-f0-9-]+$", a))])
    error_message = "kms_key_arns must be KMS key ARNs (arn:aws:kms:REGION:ACCOUNT:key/ID), not aliases."
  }
}

variable "data_bucket_arns" {
  description = "The four data buckets the pipeline reads, writes and purges (archive, manifests, analytics, receipts)."
  type        = list(string)

  validation {
    condition     = length(var.data_bucket_arns) == 4 && alltrue([for a in var.data_bucket_arns : can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", a))])
    error_message = "data_bucket_arns must be exactly four S3 bucket ARNs (archive, manifests, analytics, receipts)."
  }
}

variable "artifacts_bucket_arn" {
  description = "The artifacts bucket: EMR reads bootstrap scripts and jars and writes logs there."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.artifacts_bucket_arn))
    error_message = "artifacts_bucket_arn must be an S3 bucket ARN."
  }
}

variable "redis_auth_secret_arn" {
  description = "Secrets Manager secret of the Redis AUTH token; empty: no secret access."
  type        = string
  default     = ""
}

variable "msk_cluster_arn" {
  description = "MSK cluster the pipeline reads with IAM auth; empty: no Kafka permissions."
  type        = string
  default     = ""
}

variable "msk_topics" {
  description = "Kafka topics the pipeline reads on MSK."
  type        = list(string)
  default     = ["sessions", "requests"]
}

variable "msk_consumer_group_prefix" {
  description = "Prefix of the Kafka consumer groups the pipeline may join."
  type        = string
  default     = "beam-rtbf"
}

variable "emr_kms_key_arns" {
  description = "KMS keys the EMR service role may grant to EBS (local-disk encryption)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
