output "bucket_names" {
  description = "Bucket name per kind: archive, manifests, analytics, receipts, artifacts."
  value       = { for k, b in aws_s3_bucket.data : k => b.id }
}

output "bucket_arns" {
  description = "Bucket ARN per kind: archive, manifests, analytics, receipts, artifacts."
  value       = { for k, b in aws_s3_bucket.data : k => b.arn }
}

output "access_log_bucket" {
  description = "Bucket receiving the S3 server access logs."
  value       = aws_s3_bucket.logs.id
}

output "kms_key_arn" {
  description = "KMS key of the buckets' default encryption."
  value       = module.kms.arn
}

output "noncurrent_version_days" {
  description = "Days until noncurrent versions (what a purge deleted) expire."
  value       = var.noncurrent_version_days
}
