# One customer-managed KMS key with rotation, the account administering it through IAM, and
# optionally CloudWatch Logs encrypting the log groups under one name pattern with it. Every
# module that encrypts something (network flow logs, streams, Redis, storage, EKS) uses this,
# so the key policy is written, reviewed and scanned once.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_administers = {
    Sid       = "AccountAdministers"
    Effect    = "Allow"
    Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
    Action    = "kms:*"
    Resource  = "*" # in a key policy, "*" is this key; roles get use rights from IAM policies
  }
  logs_use = {
    Sid       = "CloudWatchLogsUse"
    Effect    = "Allow"
    Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
    Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    Resource  = "*"
    Condition = {
      ArnLike = {
        "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:${var.log_group_pattern}"
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  deletion_window_in_days = var.deletion_window_in_days
  policy = (var.log_group_pattern == ""
    ? jsonencode({ Version = "2012-10-17", Statement = [local.account_administers] })
    : jsonencode({ Version = "2012-10-17", Statement = [local.account_administers, local.logs_use] })
  )
  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}
