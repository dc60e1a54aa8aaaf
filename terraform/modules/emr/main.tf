# Spark on EMR for the SparkRunner: private subnet, encryption at rest (EMRFS SSE-KMS, local
# disks and EBS with KMS) and in transit (TLS), IMDSv2, logs and bootstrap in the artifacts
# bucket, auto-termination when idle.

resource "aws_emr_security_configuration" "this" {
  name = "${var.name}-security"
  configuration = jsonencode({
    EncryptionConfiguration = {
      EnableAtRestEncryption    = true
      EnableInTransitEncryption = true
      AtRestEncryptionConfiguration = {
        S3EncryptionConfiguration = {
          EncryptionMode = "SSE-KMS"
          AwsKmsKey      = var.kms_key_arn
        }
        LocalDiskEncryptionConfiguration = {
          EncryptionKeyProviderType = "AwsKms"
          AwsKmsKey                 = var.kms_key_arn
          EnableEbsEncryption       = true
        }
      }
      InTransitEncryptionConfiguration = {
        TLSCertificateConfiguration = {
          CertificateProviderType = "PEM"
          S3Object                = "s3://${var.artifacts_bucket}/${var.tls_certificates_s3_key}"
        }
      }
    }
    InstanceMetadataServiceConfiguration = {
      MinimumInstanceMetadataServiceVersion = 2
      HttpPutResponseHopLimit               = 1
    }
  })
}

resource "aws_emr_cluster" "this" {
  #checkov:skip=CKV2_AWS_7:the EMR security groups come from the network module (no ingress except 8443 from the pipeline group); checkov's graph does not follow module outputs
  name                              = var.name
  release_label                     = var.release_label
  applications                      = ["Hadoop", "Spark"]
  service_role                      = var.service_role_arn
  security_configuration            = aws_emr_security_configuration.this.name
  log_uri                           = "s3://${var.artifacts_bucket}/emr-logs/"
  termination_protection            = var.termination_protection
  keep_job_flow_alive_when_no_steps = true
  ebs_root_volume_size              = 32

  ec2_attributes {
    subnet_id                         = var.subnet_id
    instance_profile                  = var.instance_profile_arn
    emr_managed_master_security_group = var.master_security_group_id
    emr_managed_slave_security_group  = var.core_security_group_id
    service_access_security_group     = var.service_security_group_id
    additional_master_security_groups = var.pipeline_security_group_id
    additional_slave_security_groups  = var.pipeline_security_group_id
  }

  master_instance_group {
    instance_type  = var.master_instance_type
    instance_count = var.master_instance_count
  }

  core_instance_group {
    instance_type  = var.core_instance_type
    instance_count = var.core_instance_count

    ebs_config {
      size                 = var.core_ebs_size_gb
      type                 = "gp3"
      volumes_per_instance = 1
    }
  }

  bootstrap_action {
    name = "install-beam-rtbf"
    path = "s3://${var.artifacts_bucket}/bootstrap/install-beam-rtbf.sh"
    args = var.bootstrap_args
  }

  auto_termination_policy {
    idle_timeout = var.idle_timeout_seconds
  }

  configurations_json = jsonencode([
    {
      Classification = "spark-defaults"
      Properties = {
        "spark.dynamicAllocation.enabled" = "true"
        "spark.io.encryption.enabled"     = "true"
      }
    },
  ])

  tags = var.tags
}
