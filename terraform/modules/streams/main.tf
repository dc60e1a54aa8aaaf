# The two input streams: Kinesis (default) and, behind enable_msk, an MSK cluster.

locals {
  streams = {
    sessions = var.sessions_shard_count
    requests = var.requests_shard_count
  }
}

module "kms" {
  source            = "../kms_key"
  alias             = "${var.name}-streams"
  description       = "${var.name}: Kinesis streams and MSK at rest"
  log_group_pattern = "/aws/msk/${var.name}*"
  tags              = var.tags
}

resource "aws_kinesis_stream" "this" {
  for_each         = local.streams
  name             = "${var.name}-${each.key}"
  shard_count      = var.stream_mode == "PROVISIONED" ? each.value : null
  retention_period = var.retention_hours
  encryption_type  = "KMS"
  kms_key_id       = module.kms.arn

  stream_mode_details {
    stream_mode = var.stream_mode
  }

  tags = merge(var.tags, { Purpose = each.key })
}

# ---- MSK: the Kafka alternative ----

resource "aws_cloudwatch_log_group" "msk" {
  count             = var.enable_msk ? 1 : 0
  name              = "/aws/msk/${var.name}"
  retention_in_days = var.msk_log_retention_days
  kms_key_id        = module.kms.arn
  tags              = var.tags
}

resource "aws_msk_configuration" "this" {
  count          = var.enable_msk ? 1 : 0
  name           = "${var.name}-kafka"
  kafka_versions = [var.msk_kafka_version]
  # Topics are created by the deployment with explicit retention; the same bound as the Kinesis streams.
  server_properties = <<-EOT
    auto.create.topics.enable=false
    default.replication.factor=3
    min.insync.replicas=2
    log.retention.hours=${var.retention_hours}
  EOT
}

resource "aws_msk_cluster" "this" {
  count                  = var.enable_msk ? 1 : 0
  cluster_name           = var.name
  kafka_version          = var.msk_kafka_version
  number_of_broker_nodes = var.msk_broker_count

  broker_node_group_info {
    instance_type   = var.msk_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [var.msk_security_group_id]

    storage_info {
      ebs_storage_info {
        volume_size = var.msk_volume_size_gb
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this[0].arn
    revision = aws_msk_configuration.this[0].latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = module.kms.arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false

    sasl {
      iam   = var.msk_client_auth == "iam"
      scram = var.msk_client_auth == "scram"
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk[0].name
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length(var.subnet_ids) >= 2 && var.msk_broker_count % length(var.subnet_ids) == 0
      error_message = "MSK needs at least two subnets and msk_broker_count must be a multiple of the number of subnets."
    }
    precondition {
      condition     = var.msk_security_group_id != ""
      error_message = "enable_msk needs msk_security_group_id."
    }
  }

  tags = var.tags
}
