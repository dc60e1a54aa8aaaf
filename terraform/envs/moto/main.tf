# The modules that a local AWS endpoint (moto's server) can apply, with the provider pointed at
# it: network (no NAT), Kinesis streams (MSK off), buckets, IAM and EKS (no node group).
# Redis (ElastiCache) and EMR are not applied here: see terraform/README.md.

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  max_retries                 = 2

  endpoints {
    ec2            = var.endpoint
    eks            = var.endpoint
    iam            = var.endpoint
    kinesis        = var.endpoint
    kms            = var.endpoint
    logs           = var.endpoint
    s3             = var.endpoint
    secretsmanager = var.endpoint
    sts            = var.endpoint
  }
}

module "network" {
  source            = "../../modules/network"
  name              = var.name_prefix
  az_count          = 2
  nat_gateway_count = 0
}

module "streams" {
  source          = "../../modules/streams"
  name            = var.name_prefix
  retention_hours = var.stream_retention_hours
  stream_mode     = "PROVISIONED"
  enable_msk      = false
}

module "storage" {
  source                  = "../../modules/storage"
  name                    = var.name_prefix
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = true
}

module "iam" {
  source               = "../../modules/iam"
  name                 = var.name_prefix
  stream_arns          = module.streams.stream_arns
  kms_key_arns         = [module.streams.kms_key_arn, module.storage.kms_key_arn]
  data_bucket_arns     = [for k in ["archive", "manifests", "analytics", "receipts"] : module.storage.bucket_arns[k]]
  artifacts_bucket_arn = module.storage.bucket_arns["artifacts"]
  allow_put_records    = true
}

module "eks" {
  source                    = "../../modules/eks"
  count                     = var.enable_eks ? 1 : 0
  name                      = "${var.name_prefix}-flink"
  subnet_ids                = module.network.private_subnet_ids
  cluster_security_group_id = module.network.eks_cluster_security_group_id
  cluster_role_arn          = module.iam.eks_cluster_role_arn
  node_role_arn             = module.iam.eks_node_role_arn
  pipeline_policy_arn       = module.iam.pipeline_policy_arn
  create_node_group         = false
}
