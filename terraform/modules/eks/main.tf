# Flink on Kubernetes: an EKS cluster with a private API endpoint, KMS-encrypted secrets, all
# control-plane logs, a managed node group, and IRSA: the Flink service account alone assumes a
# role carrying the pipeline policy.

module "kms" {
  source            = "../kms_key"
  alias             = "${var.name}-eks"
  description       = "${var.name}: EKS secrets and control-plane logs"
  log_group_pattern = "/aws/eks/${var.name}/*"
  tags              = var.tags
}

# Created before the cluster so EKS does not create it without retention and encryption.
resource "aws_cloudwatch_log_group" "cluster" {
  name              = "/aws/eks/${var.name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.kms.arn
  tags              = var.tags
}

resource "aws_eks_cluster" "this" {
  name     = var.name
  version  = var.kubernetes_version
  role_arn = var.cluster_role_arn

  vpc_config {
    subnet_ids              = var.subnet_ids
    security_group_ids      = [var.cluster_security_group_id]
    endpoint_private_access = true
    endpoint_public_access  = var.endpoint_public_access
    public_access_cidrs     = var.endpoint_public_access ? var.public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = module.kms.arn
    }
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  lifecycle {
    precondition {
      condition     = !var.endpoint_public_access || length(var.public_access_cidrs) > 0
      error_message = "endpoint_public_access needs public_access_cidrs (the API is never open to 0.0.0.0/0)."
    }
  }

  tags       = var.tags
  depends_on = [aws_cloudwatch_log_group.cluster]
}

resource "aws_eks_node_group" "this" {
  count           = var.create_node_group ? 1 : 0
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-flink"
  node_role_arn   = var.node_role_arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.node_instance_types
  disk_size       = var.node_disk_size_gb
  version         = var.kubernetes_version

  scaling_config {
    min_size     = var.node_min_size
    desired_size = var.node_desired_size
    max_size     = var.node_max_size
  }

  update_config {
    max_unavailable = 1
  }

  lifecycle {
    precondition {
      condition     = var.node_min_size <= var.node_desired_size && var.node_desired_size <= var.node_max_size
      error_message = "node sizes must satisfy node_min_size <= node_desired_size <= node_max_size."
    }
  }

  tags = var.tags
}

# ---- IRSA ----

resource "aws_iam_openid_connect_provider" "this" {
  url             = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = length(var.oidc_thumbprints) > 0 ? var.oidc_thumbprints : null
  tags            = var.tags
}

locals {
  issuer_host_path = replace(aws_iam_openid_connect_provider.this.url, "https://", "")
}

data "aws_iam_policy_document" "flink_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host_path}:sub"
      values   = ["system:serviceaccount:${var.flink_namespace}:${var.flink_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host_path}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "flink" {
  name               = "${var.name}-flink-sa"
  description        = "IRSA role of system:serviceaccount:${var.flink_namespace}:${var.flink_service_account}"
  assume_role_policy = data.aws_iam_policy_document.flink_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "flink" {
  role       = aws_iam_role.flink.name
  policy_arn = var.pipeline_policy_arn
}
