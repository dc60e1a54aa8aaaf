"""Purge manifests: per request, every place the subject's data went."""
