# Least-privilege IAM: one pipeline policy (streams, keys, buckets, Redis secret, MSK) attached
# to the pipeline role (the EMR instance profile) and, in the eks module, to the Flink service
# account's IRSA role; the EMR service role; the EKS cluster and node roles.
#
# Wildcards: none on pipeline resources, except object ARNs "BUCKET/*" (objects are addressed
# under their bucket), the stream consumer ARNs "STREAM/consumer/*" (SubscribeToShard acts on a
# consumer), and MSK topic and group ARNs under the cluster (named by prefix). AWS managed
# policies are used only where AWS requires them (EMR service, EKS cluster and node roles).

data "aws_partition" "current" {}

locals {
  p          = data.aws_partition.current.partition
  enable_msk = var.msk_cluster_arn != ""
  # arn:aws:kafka:R:A:cluster/NAME/UUID -> arn:aws:kafka:R:A:topic/NAME/UUID (topics and groups live under it)
  msk_topic_base = replace(var.msk_cluster_arn, ":cluster/", ":topic/")
  msk_group_base = replace(var.msk_cluster_arn, ":cluster/", ":group/")
}

data "aws_iam_policy_document" "pipeline" {
  statement {
    sid = "ReadOwnStreams"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:ListShards",
      "kinesis:GetShardIterator",
      "kinesis:GetRecords",
      "kinesis:SubscribeToShard",
    ]
    resources = concat(var.stream_arns, [for a in var.stream_arns : "${a}/consumer/*"])
  }

  dynamic "statement" {
    for_each = var.allow_put_records ? [1] : []
    content {
      sid       = "GeneratorWritesOwnStreams"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords"]
      resources = var.stream_arns
    }
  }

  statement {
    sid       = "UseOwnKeys"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = var.kms_key_arns
  }

  statement {
    sid       = "ListOwnBuckets"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = var.data_bucket_arns
  }

  statement {
    sid = "ReadWritePurgeOwnObjects"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:DeleteObjectVersion",
    ]
    resources = [for a in var.data_bucket_arns : "${a}/*"]
  }

  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [var.artifacts_bucket_arn]
  }

  statement {
    sid       = "ReadArtifactsWriteLogs"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.artifacts_bucket_arn}/*"]
  }

  statement {
    sid       = "FlinkCheckpointsExpire"
    actions   = ["s3:DeleteObject"]
    resources = ["${var.artifacts_bucket_arn}/flink/*"]
  }

  dynamic "statement" {
    for_each = var.redis_auth_secret_arn != "" ? [1] : []
    content {
      sid       = "ReadRedisAuthToken"
      actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
      resources = [var.redis_auth_secret_arn]
    }
  }

  dynamic "statement" {
    for_each = local.enable_msk ? [1] : []
    content {
      sid       = "ConnectToMsk"
      actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
      resources = [var.msk_cluster_arn]
    }
  }

  dynamic "statement" {
    for_each = local.enable_msk ? [1] : []
    content {
      sid       = "ReadMskTopics"
      actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
      resources = [for t in var.msk_topics : "${local.msk_topic_base}/${t}"]
    }
  }

  dynamic "statement" {
    for_each = local.enable_msk ? [1] : []
    content {
      sid       = "UseMskConsumerGroups"
      actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
      resources = ["${local.msk_group_base}/${var.msk_consumer_group_prefix}*"]
    }
  }
}

resource "aws_iam_policy" "pipeline" {
  name        = "${var.name}-pipeline"
  description = "beam-rtbf pipeline: its streams, keys, buckets and Redis secret, nothing else"
  policy      = data.aws_iam_policy_document.pipeline.json
  tags        = var.tags
}

# ---- the pipeline role: EMR instance profile ----

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "pipeline" {
  name               = "${var.name}-pipeline"
  description        = "beam-rtbf pipeline workers on EMR (instance profile)"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "pipeline" {
  role       = aws_iam_role.pipeline.name
  policy_arn = aws_iam_policy.pipeline.arn
}

resource "aws_iam_instance_profile" "pipeline" {
  name = "${var.name}-pipeline"
  role = aws_iam_role.pipeline.name
  tags = var.tags
}

# ---- EMR service role ----

data "aws_iam_policy_document" "emr_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["elasticmapreduce.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "emr_service" {
  name               = "${var.name}-emr-service"
  description        = "EMR service role (acts only on resources tagged for-use-with-amazon-emr-managed-policies)"
  assume_role_policy = data.aws_iam_policy_document.emr_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "emr_service" {
  role       = aws_iam_role.emr_service.name
  policy_arn = "arn:${local.p}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
}

resource "aws_iam_role_policy_attachment" "emr_service_ec2_tagged" {
  role       = aws_iam_role.emr_service.name
  policy_arn = aws_iam_policy.emr_pass_role.arn
}

data "aws_iam_policy_document" "emr_pass_role" {
  statement {
    sid       = "PassPipelineRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.pipeline.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = length(var.emr_kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "EncryptLocalDisks"
      actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"]
      resources = var.emr_kms_key_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.emr_kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "GrantKeysToEbs"
      actions   = ["kms:CreateGrant"]
      resources = var.emr_kms_key_arns
      condition {
        test     = "Bool"
        variable = "kms:GrantIsForAWSResource"
        values   = ["true"]
      }
    }
  }
}

resource "aws_iam_policy" "emr_pass_role" {
  name        = "${var.name}-emr-service-extra"
  description = "EMR service: pass the pipeline role to EC2 and encrypt local disks with the given keys"
  policy      = data.aws_iam_policy_document.emr_pass_role.json
  tags        = var.tags
}

# ---- EKS cluster and node roles ----

data "aws_iam_policy_document" "eks_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "eks_cluster" {
  name               = "${var.name}-eks-cluster"
  description        = "EKS control plane of the Flink cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "eks_cluster" {
  role       = aws_iam_role.eks_cluster.name
  policy_arn = "arn:${local.p}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_iam_role" "eks_node" {
  name               = "${var.name}-eks-node"
  description        = "EKS managed nodes of the Flink cluster (pods get the pipeline rights through IRSA, not from the node)"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "eks_node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])
  role       = aws_iam_role.eks_node.name
  policy_arn = "arn:${local.p}:iam::aws:policy/${each.key}"
}
