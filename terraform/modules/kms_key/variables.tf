variable "alias" {
  description = "Alias of the key, without the alias/ prefix (e.g. acme-rtbf-redis)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9/_-]{1,250}$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "alias must be letters, digits, /, _ or - and must not start with aws/."
  }
}

variable "description" {
  description = "What the key encrypts."
  type        = string
}

variable "log_group_pattern" {
  description = "CloudWatch log group names (ARN pattern after log-group:) that may be encrypted with the key; empty: none."
  type        = string
  default     = ""
}

variable "deletion_window_in_days" {
  description = "Days a deleted key waits before it is gone (7-30)."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags of the key."
  type        = map(string)
  default     = {}
}
