"""Writing files on any Beam filesystem (local, s3://, gs://), atomically."""
