# The pipeline's buckets: archive, manifests, analytics, receipts, plus artifacts (EMR logs,
# bootstrap script, jars), and an access-log bucket they all log to.
#
# Every data bucket: SSE-KMS with the module's key, all four public access blocks, owner-enforced
# object ownership (no ACLs), versioning, a lifecycle that expires noncurrent versions (the purge's
# deletes become final within noncurrent_version_days), aborts incomplete uploads and removes
# expired delete markers, a policy refusing non-TLS requests, and server access logging.

data "aws_caller_identity" "current" {}

locals {
  kinds = toset(["archive", "manifests", "analytics", "receipts", "artifacts"])
}

module "kms" {
  source      = "../kms_key"
  alias       = "${var.name}-storage"
  description = "${var.name}: S3 buckets of the pipeline"
  tags        = var.tags
}

# ---- data buckets ----

resource "aws_s3_bucket" "data" {
  for_each      = local.kinds
  bucket        = "${var.name}-${each.key}"
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Purpose = each.key })
}

resource "aws_s3_bucket_ownership_controls" "data" {
  for_each = local.kinds
  bucket   = aws_s3_bucket.data[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each                = local.kinds
  bucket                  = aws_s3_bucket.data[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = local.kinds
  bucket   = aws_s3_bucket.data[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.kms.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "data" {
  for_each = local.kinds
  bucket   = aws_s3_bucket.data[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = local.kinds
  bucket   = aws_s3_bucket.data[each.key].id

  rule {
    id     = "erasure-bound"
    status = "Enabled"
    filter {
      prefix = "" # every object
    }

    # Older versions still hold what a purge deleted: they expire after noncurrent_version_days
    # (default 7, at most 30: inside the GDPR one-month erasure deadline).
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_upload_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.data]
}

data "aws_iam_policy_document" "data_tls_only" {
  for_each = local.kinds

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.data[each.key].arn,
      "${aws_s3_bucket.data[each.key].arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  for_each   = local.kinds
  bucket     = aws_s3_bucket.data[each.key].id
  policy     = data.aws_iam_policy_document.data_tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.data]
}

resource "aws_s3_bucket_logging" "data" {
  for_each      = local.kinds
  bucket        = aws_s3_bucket.data[each.key].id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${each.key}/"
  # S3 checks that the target's policy admits the logging service before accepting the config.
  depends_on = [aws_s3_bucket_policy.logs]
}

# ---- access-log bucket ----

# S3 server access logging cannot deliver to a bucket whose default encryption is SSE-KMS,
# so this one bucket uses SSE-S3; the logs themselves do not hold pipeline data.
resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_145:S3 server access log delivery supports only SSE-S3 on the target bucket
  #checkov:skip=CKV_AWS_18:this is the access-log target; logging it to itself would loop
  bucket        = "${var.name}-access-logs"
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Purpose = "access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {
      prefix = "" # every object
    }

    expiration {
      days = var.access_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_upload_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "S3ServerAccessLogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [for b in aws_s3_bucket.data : b.arn]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.logs.arn,
      "${aws_s3_bucket.logs.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket     = aws_s3_bucket.logs.id
  policy     = data.aws_iam_policy_document.logs.json
  depends_on = [aws_s3_bucket_public_access_block.logs]
}
