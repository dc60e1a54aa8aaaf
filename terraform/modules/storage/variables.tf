variable "name" {
  description = "Bucket name prefix: buckets are NAME-archive, NAME-manifests, NAME-analytics, NAME-receipts, NAME-artifacts and NAME-access-logs."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3-40 characters of lowercase letters, digits and hyphens (S3 bucket naming), not starting or ending with a hyphen."
  }
}

variable "noncurrent_version_days" {
  description = <<-EOT
    Days a noncurrent object version is kept before S3 expires it (1..30). A purge deletes the
    current object; its older versions hold the erased user's data until this expiry, so it
    bounds erasure. The default 7 is well inside the GDPR one-month erasure deadline.
  EOT
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_days >= 1 && var.noncurrent_version_days <= 30 && floor(var.noncurrent_version_days) == var.noncurrent_version_days
    error_message = "noncurrent_version_days must be a whole number between 1 and 30: older object versions keep erased users' data until they expire, and GDPR gives one month to erase."
  }
}

variable "abort_incomplete_upload_days" {
  description = "Days after which incomplete multipart uploads (partial copies of data) are aborted."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_upload_days >= 1 && var.abort_incomplete_upload_days <= 7
    error_message = "abort_incomplete_upload_days must be between 1 and 7."
  }
}

variable "access_log_retention_days" {
  description = "Days the S3 server access logs are kept (they name requesters and object keys)."
  type        = number
  default     = 90

  validation {
    condition     = var.access_log_retention_days >= 1 && var.access_log_retention_days <= 3650
    error_message = "access_log_retention_days must be between 1 and 3650."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets (test environments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
