variable "name" {
  description = "Name of the EKS cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,62}$", var.name))
    error_message = "name must be 2-63 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes version of the control plane and nodes."
  type        = string
  default     = "1.31"

  validation {
    condition     = can(regex("^1\\.(2[89]|3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a supported EKS version from 1.28 on, such as 1.31."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the control-plane ENIs and the nodes (at least two AZs)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must hold at least two subnets in different AZs (EKS requires it)."
  }
}

variable "cluster_security_group_id" {
  description = "Additional security group of the control plane (admits the pipeline nodes)."
  type        = string
}

variable "cluster_role_arn" {
  description = "EKS cluster role."
  type        = string
}

variable "node_role_arn" {
  description = "EKS node role."
  type        = string
}

variable "endpoint_public_access" {
  description = "Expose the Kubernetes API endpoint publicly (off: reachable from inside the VPC only)."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to the public endpoint when endpoint_public_access is true (never 0.0.0.0/0)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "public_access_cidrs must be valid CIDRs and not 0.0.0.0/0."
  }
}

variable "node_instance_types" {
  description = "EC2 types of the managed node group (Flink job and task managers)."
  type        = list(string)
  default     = ["m6i.xlarge"]

  validation {
    condition     = length(var.node_instance_types) > 0 && alltrue([for t in var.node_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[0-9]*[a-z0-9]+$", t))])
    error_message = "node_instance_types must be a non-empty list of EC2 instance types."
  }
}

variable "node_min_size" {
  description = "Minimum nodes."
  type        = number
  default     = 2

  validation {
    condition     = var.node_min_size >= 1 && var.node_min_size <= 100
    error_message = "node_min_size must be between 1 and 100."
  }
}

variable "node_desired_size" {
  description = "Desired nodes (between min and max)."
  type        = number
  default     = 2

  validation {
    condition     = var.node_desired_size >= 1 && var.node_desired_size <= 100
    error_message = "node_desired_size must be between 1 and 100."
  }
}

variable "node_max_size" {
  description = "Maximum nodes."
  type        = number
  default     = 6

  validation {
    condition     = var.node_max_size >= 1 && var.node_max_size <= 100
    error_message = "node_max_size must be between 1 and 100."
  }
}

variable "node_disk_size_gb" {
  description = "Root volume per node, in GB (Flink state and spill)."
  type        = number
  default     = 50

  validation {
    condition     = var.node_disk_size_gb >= 20 && var.node_disk_size_gb <= 1000
    error_message = "node_disk_size_gb must be between 20 and 1000."
  }
}

variable "flink_namespace" {
  description = "Kubernetes namespace of the Flink job."
  type        = string
  default     = "beam-rtbf"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.flink_namespace))
    error_message = "flink_namespace must be a DNS label (lowercase letters, digits, hyphens; at most 63)."
  }
}

variable "flink_service_account" {
  description = "Kubernetes service account of the Flink pods; only it may assume the pipeline role (IRSA)."
  type        = string
  default     = "flink"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.flink_service_account))
    error_message = "flink_service_account must be a Kubernetes object name (lowercase letters, digits, '-' and '.')."
  }
}

variable "pipeline_policy_arn" {
  description = "The pipeline's least-privilege policy, attached to the Flink service-account role."
  type        = string
}

variable "oidc_thumbprints" {
  description = "Thumbprints of the OIDC issuer's CA; empty lets IAM use its trusted CA library (the usual case for EKS)."
  type        = list(string)
  default     = []
}

variable "create_node_group" {
  description = "Create the managed node group (off only where the API cannot, e.g. a local emulator)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the control-plane logs are kept in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
