variable "name" {
  description = "Name of the EMR cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,62}$", var.name))
    error_message = "name must be 2-63 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "release_label" {
  description = "EMR release (Spark 3.5 on emr-7.x)."
  type        = string
  default     = "emr-7.5.0"

  validation {
    condition     = can(regex("^emr-[67]\\.[0-9]+\\.[0-9]+$", var.release_label))
    error_message = "release_label must be an EMR 6.x or 7.x release such as emr-7.5.0 (Spark 3, Python 3)."
  }
}

variable "master_instance_type" {
  description = "EC2 type of the primary node."
  type        = string
  default     = "m6g.xlarge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[0-9]*[a-z0-9]+$", var.master_instance_type))
    error_message = "master_instance_type must be an EC2 instance type such as m6g.xlarge."
  }
}

variable "master_instance_count" {
  description = "Primary nodes: 1, or 3 for high availability."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3], var.master_instance_count)
    error_message = "master_instance_count must be 1 or 3."
  }
}

variable "core_instance_type" {
  description = "EC2 type of the core nodes (Spark executors)."
  type        = string
  default     = "m6g.xlarge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[0-9]*[a-z0-9]+$", var.core_instance_type))
    error_message = "core_instance_type must be an EC2 instance type such as m6g.xlarge."
  }
}

variable "core_instance_count" {
  description = "Core nodes."
  type        = number
  default     = 2

  validation {
    condition     = var.core_instance_count >= 1 && var.core_instance_count <= 50 && floor(var.core_instance_count) == var.core_instance_count
    error_message = "core_instance_count must be a whole number between 1 and 50."
  }
}

variable "core_ebs_size_gb" {
  description = "EBS volume per core node, in GB (encrypted by the security configuration)."
  type        = number
  default     = 64

  validation {
    condition     = var.core_ebs_size_gb >= 32 && var.core_ebs_size_gb <= 2048
    error_message = "core_ebs_size_gb must be between 32 and 2048."
  }
}

variable "artifacts_bucket" {
  description = "Bucket of the bootstrap script (bootstrap/install-beam-rtbf.sh), jars, TLS certificates and cluster logs (emr-logs/)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifacts_bucket))
    error_message = "artifacts_bucket must be an S3 bucket name."
  }
}

variable "bootstrap_args" {
  description = "Arguments of the bootstrap script (e.g. the beam-rtbf wheel's S3 path)."
  type        = list(string)
  default     = []
}

variable "tls_certificates_s3_key" {
  description = "Key, in the artifacts bucket, of the zip of PEM certificates EMR uses for in-transit encryption."
  type        = string
  default     = "tls/emr-certs.zip"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()/-]+\\.zip$", var.tls_certificates_s3_key))
    error_message = "tls_certificates_s3_key must be an S3 key ending in .zip."
  }
}

variable "kms_key_arn" {
  description = "KMS key for EMRFS (S3) and local-disk encryption."
  type        = string
}

variable "subnet_id" {
  description = "Private subnet of the cluster."
  type        = string
}

variable "master_security_group_id" {
  description = "EMR managed security group of the primary node."
  type        = string
}

variable "core_security_group_id" {
  description = "EMR managed security group of the core nodes."
  type        = string
}

variable "service_security_group_id" {
  description = "EMR service access security group (required in private subnets)."
  type        = string
}

variable "pipeline_security_group_id" {
  description = "The pipeline group, added to every node (reaches Redis, MSK)."
  type        = string
}

variable "service_role_arn" {
  description = "EMR service role."
  type        = string
}

variable "instance_profile_arn" {
  description = "Instance profile of the pipeline role."
  type        = string
}

variable "termination_protection" {
  description = "Protect the cluster from termination (turn off before destroy)."
  type        = bool
  default     = true
}

variable "idle_timeout_seconds" {
  description = "Terminate the cluster after this many idle seconds (60 s to 7 days)."
  type        = number
  default     = 3600

  validation {
    condition     = var.idle_timeout_seconds >= 60 && var.idle_timeout_seconds <= 604800
    error_message = "idle_timeout_seconds must be between 60 and 604800 (7 days)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
