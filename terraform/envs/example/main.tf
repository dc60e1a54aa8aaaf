# A complete deployment: network, streams (Kinesis, optional MSK), Redis, buckets, IAM, Spark on
# EMR and Flink on EKS. The outputs are what the runner profiles read:
#   terraform output -json > tf.json && beam-rtbf run --runner flink --tf_outputs tf.json --dry-run

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      Project   = "beam-rtbf"
      ManagedBy = "terraform"
    }
  }
}

module "network" {
  source            = "../../modules/network"
  name              = var.name_prefix
  vpc_cidr          = var.vpc_cidr
  az_count          = var.az_count
  nat_gateway_count = var.nat_gateway_count
}

module "streams" {
  source                = "../../modules/streams"
  name                  = var.name_prefix
  retention_hours       = var.stream_retention_hours
  stream_mode           = var.stream_mode
  enable_msk            = var.enable_msk
  subnet_ids            = module.network.private_subnet_ids
  msk_security_group_id = module.network.msk_security_group_id
}

module "storage" {
  source                  = "../../modules/storage"
  name                    = var.name_prefix
  noncurrent_version_days = var.noncurrent_version_days
}

module "redis" {
  source            = "../../modules/redis"
  name              = "${var.name_prefix}-registry"
  node_type         = var.redis_node_type
  auth_token        = var.redis_auth_token
  subnet_ids        = module.network.private_subnet_ids
  security_group_id = module.network.redis_security_group_id
}

module "iam" {
  source      = "../../modules/iam"
  name        = var.name_prefix
  stream_arns = module.streams.stream_arns
  kms_key_arns = [
    module.streams.kms_key_arn,
    module.storage.kms_key_arn,
    module.redis.kms_key_arn,
  ]
  data_bucket_arns      = [for k in ["archive", "manifests", "analytics", "receipts"] : module.storage.bucket_arns[k]]
  artifacts_bucket_arn  = module.storage.bucket_arns["artifacts"]
  redis_auth_secret_arn = module.redis.auth_secret_arn
  msk_cluster_arn       = module.streams.msk_cluster_arn
  emr_kms_key_arns      = [module.storage.kms_key_arn]
}

module "emr" {
  source                     = "../../modules/emr"
  name                       = "${var.name_prefix}-spark"
  release_label              = var.emr_release_label
  core_instance_count        = var.emr_core_instance_count
  termination_protection     = var.emr_termination_protection
  artifacts_bucket           = module.storage.bucket_names["artifacts"]
  kms_key_arn                = module.storage.kms_key_arn
  subnet_id                  = module.network.private_subnet_ids[0]
  master_security_group_id   = module.network.emr_master_security_group_id
  core_security_group_id     = module.network.emr_core_security_group_id
  service_security_group_id  = module.network.emr_service_security_group_id
  pipeline_security_group_id = module.network.pipeline_security_group_id
  service_role_arn           = module.iam.emr_service_role_arn
  instance_profile_arn       = module.iam.pipeline_instance_profile_arn
  # runners/spark-emr/bootstrap.sh: where `submit.sh upload` put the wheel, and the secrets
  # the workers and the job step get as environment variables (fetched at start, not stored).
  bootstrap_args = concat(
    ["--artifacts", "s3://${module.storage.bucket_names["artifacts"]}/bootstrap"],
    module.redis.auth_secret_arn != "" ? ["--secret", "RTBF_REDIS_PASSWORD=${module.redis.auth_secret_arn}"] : [],
  )
}

module "eks" {
  source                    = "../../modules/eks"
  name                      = "${var.name_prefix}-flink"
  kubernetes_version        = var.kubernetes_version
  subnet_ids                = module.network.private_subnet_ids
  cluster_security_group_id = module.network.eks_cluster_security_group_id
  cluster_role_arn          = module.iam.eks_cluster_role_arn
  node_role_arn             = module.iam.eks_node_role_arn
  pipeline_policy_arn       = module.iam.pipeline_policy_arn
  flink_namespace           = var.flink_namespace
  flink_service_account     = var.flink_service_account
}
