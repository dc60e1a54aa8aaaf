# VPC with private subnets (pipeline, Redis, MSK, EMR, EKS) and public subnets (NAT only),
# flow logs, a locked default security group, and one security group per service that only
# admits the pipeline's security group.

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_caller_identity" "current" {}

locals {
  azs = slice(length(var.availability_zones) > 0 ? var.availability_zones : data.aws_availability_zones.available.names, 0, var.az_count)
  # Resources EMR's managed service policy (AmazonEMRServicePolicy_v2) may act on carry this tag.
  emr_tag = { "for-use-with-amazon-emr-managed-policies" = "true" }
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "private" {
  count             = var.az_count
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  tags              = merge(var.tags, local.emr_tag, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_subnet" "public" {
  count                   = var.az_count
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index + 8)
  map_public_ip_on_launch = false
  tags                    = merge(var.tags, { Name = "${var.name}-public-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_internet_gateway" "this" {
  count  = var.nat_gateway_count > 0 ? 1 : 0
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_eip" "nat" {
  count  = min(var.nat_gateway_count, var.az_count)
  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat-${count.index}" })
}

resource "aws_nat_gateway" "this" {
  count         = min(var.nat_gateway_count, var.az_count)
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(var.tags, { Name = "${var.name}-nat-${count.index}" })
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  count                  = var.nat_gateway_count > 0 ? 1 : 0
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count          = var.az_count
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  count  = var.az_count
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count                  = var.nat_gateway_count > 0 ? var.az_count : 0
  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[count.index % min(var.nat_gateway_count, var.az_count)].id
}

resource "aws_route_table_association" "private" {
  count          = var.az_count
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# ---- flow logs (all traffic, to an encrypted CloudWatch log group) ----

module "kms" {
  source            = "../kms_key"
  alias             = "${var.name}-flow-logs"
  description       = "${var.name}: VPC flow logs"
  log_group_pattern = "/aws/vpc/${var.name}/*"
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/aws/vpc/${var.name}/flow-logs"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = module.kms.arn
  tags              = var.tags
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_write" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "flow" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow_write.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
  tags            = var.tags
}

# ---- security groups ----

# The default security group admits nothing and lets nothing out: every resource names its own group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny" })
}

# The pipeline's own group: EMR instances and EKS nodes carry it; the service groups below admit only it.
resource "aws_security_group" "pipeline" {
  name        = "${var.name}-pipeline"
  description = "beam-rtbf pipeline workers (EMR instances, EKS nodes)"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, local.emr_tag, { Name = "${var.name}-pipeline" })
}

resource "aws_vpc_security_group_egress_rule" "pipeline_https" {
  security_group_id = aws_security_group.pipeline.id
  description       = "HTTPS to AWS APIs (Kinesis, S3, KMS, STS, Secrets Manager) through the NAT"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "pipeline_redis" {
  security_group_id            = aws_security_group.pipeline.id
  description                  = "Redis (TLS) of the deletion registry"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_vpc_security_group_egress_rule" "pipeline_msk" {
  security_group_id            = aws_security_group.pipeline.id
  description                  = "Kafka brokers (TLS with client auth)"
  ip_protocol                  = "tcp"
  from_port                    = var.msk_port
  to_port                      = var.msk_port
  referenced_security_group_id = aws_security_group.msk.id
}

resource "aws_vpc_security_group_egress_rule" "pipeline_self" {
  security_group_id            = aws_security_group.pipeline.id
  description                  = "Worker to worker (Flink task managers, Spark executors)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.pipeline.id
}

resource "aws_vpc_security_group_ingress_rule" "pipeline_self" {
  security_group_id            = aws_security_group.pipeline.id
  description                  = "Worker to worker (Flink task managers, Spark executors)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.pipeline.id
}

resource "aws_vpc_security_group_ingress_rule" "pipeline_from_eks_control_plane" {
  for_each                     = toset(["443", "10250"])
  security_group_id            = aws_security_group.pipeline.id
  description                  = "EKS control plane to webhooks (443) and kubelets (10250)"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.key)
  to_port                      = tonumber(each.key)
  referenced_security_group_id = aws_security_group.eks_cluster.id
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "ElastiCache Redis: the deletion registry, reachable from the pipeline only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-redis" })
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_pipeline" {
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis TLS from the pipeline"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.pipeline.id
}

resource "aws_security_group" "msk" {
  name        = "${var.name}-msk"
  description = "MSK brokers, reachable from the pipeline only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-msk" })
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_pipeline" {
  security_group_id            = aws_security_group.msk.id
  description                  = "Kafka TLS with client auth from the pipeline"
  ip_protocol                  = "tcp"
  from_port                    = var.msk_port
  to_port                      = var.msk_port
  referenced_security_group_id = aws_security_group.pipeline.id
}

resource "aws_security_group" "eks_cluster" {
  name        = "${var.name}-eks-cluster"
  description = "EKS control plane ENIs, reachable from the pipeline nodes only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-eks-cluster" })
}

resource "aws_vpc_security_group_ingress_rule" "eks_from_pipeline" {
  security_group_id            = aws_security_group.eks_cluster.id
  description                  = "Kubernetes API from the pipeline nodes"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.pipeline.id
}

resource "aws_vpc_security_group_egress_rule" "eks_to_pipeline" {
  for_each                     = toset(["443", "10250"])
  security_group_id            = aws_security_group.eks_cluster.id
  description                  = "Control plane to webhooks (443) and kubelets (10250) on the nodes"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.key)
  to_port                      = tonumber(each.key)
  referenced_security_group_id = aws_security_group.pipeline.id
}

# EMR's managed groups: EMR adds the rules it needs between master, core and service access
# itself; the only rule given here admits the pipeline group. revoke_rules_on_delete lets
# destroy remove EMR's cross-references.
resource "aws_security_group" "emr_master" {
  name                   = "${var.name}-emr-master"
  description            = "EMR primary node (rules managed by EMR), pipeline ingress only"
  vpc_id                 = aws_vpc.this.id
  revoke_rules_on_delete = true
  tags                   = merge(var.tags, local.emr_tag, { Name = "${var.name}-emr-master" })
}

resource "aws_security_group" "emr_core" {
  name                   = "${var.name}-emr-core"
  description            = "EMR core and task nodes (rules managed by EMR)"
  vpc_id                 = aws_vpc.this.id
  revoke_rules_on_delete = true
  tags                   = merge(var.tags, local.emr_tag, { Name = "${var.name}-emr-core" })
}

resource "aws_security_group" "emr_service" {
  name                   = "${var.name}-emr-service"
  description            = "EMR service access in private subnets (rules managed by EMR)"
  vpc_id                 = aws_vpc.this.id
  revoke_rules_on_delete = true
  tags                   = merge(var.tags, local.emr_tag, { Name = "${var.name}-emr-service" })
}

resource "aws_vpc_security_group_ingress_rule" "emr_master_from_pipeline" {
  security_group_id            = aws_security_group.emr_master.id
  description                  = "YARN/Spark submission from the pipeline group"
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
  referenced_security_group_id = aws_security_group.pipeline.id
}
