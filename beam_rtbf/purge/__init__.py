"""Historical erasure: purge the archive from manifests, call downstream APIs, write receipts."""
