variable "endpoint" {
  description = "URL of the local AWS endpoint (moto's server), e.g. http://127.0.0.1:5000."
  type        = string

  validation {
    condition     = can(regex("^http://(127\\.0\\.0\\.1|localhost):[0-9]+$", var.endpoint))
    error_message = "endpoint must be a loopback URL such as http://127.0.0.1:5000: this environment never talks to real AWS."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "rtbf-moto"
}

variable "stream_retention_hours" {
  description = "Passed to the streams module (validated there: 24..168)."
  type        = number
  default     = 24
}

variable "noncurrent_version_days" {
  description = "Passed to the storage module (validated there: 1..30)."
  type        = number
  default     = 7
}

variable "enable_eks" {
  description = "Also apply the eks module (cluster, OIDC provider, Flink IRSA role; the node group stays off)."
  type        = bool
  default     = true
}
