variable "name" {
  description = "Name prefix of every network resource (lowercase letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC, a /16 to /22 private range."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 22, false)
    error_message = "vpc_cidr must be a valid IPv4 CIDR with a prefix length between /16 and /22."
  }
}

variable "az_count" {
  description = "Number of availability zones to spread the private and public subnets over."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number between 1 and 6."
  }
}

variable "availability_zones" {
  description = "Explicit availability zone names (at least az_count of them); empty: the region's first az_count available zones."
  type        = list(string)
  default     = []
}

variable "nat_gateway_count" {
  description = "NAT gateways for the private subnets' egress: 0 (no internet egress), 1 (shared), or one per AZ (az_count)."
  type        = number
  default     = 1

  validation {
    condition     = var.nat_gateway_count >= 0 && var.nat_gateway_count <= 6 && floor(var.nat_gateway_count) == var.nat_gateway_count
    error_message = "nat_gateway_count must be a whole number between 0 and 6 (and at most az_count)."
  }
}

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept in CloudWatch Logs (they hold IP addresses: personal data under GDPR)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one of the CloudWatch Logs retention values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "msk_port" {
  description = "Broker port the pipeline reaches MSK on: 9098 (IAM auth over TLS) or 9096 (SASL/SCRAM over TLS)."
  type        = number
  default     = 9098

  validation {
    condition     = contains([9096, 9098], var.msk_port)
    error_message = "msk_port must be 9098 (IAM) or 9096 (SASL/SCRAM); plaintext and unauthenticated TLS ports are not offered."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
