"""Names of the Beam metrics the graph reports; ``summary.json`` is built from them."""

NAMESPACE = "rtbf"

SESSIONS_IN = "sessions_in"
SESSIONS_CLEAN = "clean"
SESSIONS_SUPPRESSED = "suppressed"
SESSIONS_DEAD_LETTERED = "sessions_dead_lettered"
SESSIONS_HELD = "sessions_held"
SESSIONS_DUPLICATE = "duplicates"
REQUESTS_IN = "requests_in"
REQUESTS_IGNORED = "requests_ignored"
REQUESTS_DEAD_LETTERED = "requests_dead_lettered"
REQUESTS_ACCEPTED = "requests_accepted"
REQUESTS_DUPLICATE = "requests_duplicate"
MANIFESTS_WRITTEN = "manifests_written"
ARCHIVE_FILES = "archive_files"
ARCHIVE_RECORDS = "archive_records"
ANALYTICS_ROWS = "analytics_rows"
ANALYTICS_DB_ROWS = "analytics_db_rows"  # part rows upserted into --analytics_sink
REGISTRY_ERRORS = "registry_errors"
# Distributions
SIDE_INPUT_AGE_MS = "deletion_set_age_ms"
REFRESH_MS = "deletion_set_refresh_ms"
EFFECTIVENESS_MS = "effectiveness_latency_ms"
# Purge: the erasure API sink
API_DONE = "erasure_api_done"
API_FAILED = "erasure_api_failed"
API_RETRIES = "erasure_api_retries"
