"""Metric names, in one place, under one namespace (what dashboards and the summary read).

Beam counters only count when incremented on the thread running the bundle, so DoFns that work
in a thread pool collect numbers in reports and increment here, on the bundle's thread.
"""

from __future__ import annotations

from apache_beam.metrics import Metrics

from transforms.dead_letter import DeadLetter

NAMESPACE = "dicomweb"

FILES_VALID = "files_valid"
INSTANCES_STORED = "instances_stored"
INSTANCES_ALREADY_PRESENT = "instances_already_present"
BYTES_STORED = "bytes_stored"
HTTP_REQUESTS = "http_requests"
HTTP_RETRIES = "http_retries"
THROTTLED_MS = "throttled_ms"
DEAD_LETTERS = "dead_letters"
FAILED_PREFIX = "failed_"
# delete family
TARGETS_PLANNED = "targets_planned"
TARGETS_DELETED = "targets_deleted"
TARGETS_ALREADY_ABSENT = "targets_already_absent"
INSTANCES_DELETED = "instances_deleted"
OPERATIONS = "operations"
OPERATION_POLLS = "operation_polls"
TARGETS_TO_DELETE = "targets_to_delete"  # planned: present in the store
TARGETS_PLANNED_ABSENT = "targets_planned_absent"  # planned: the store does not hold it
# JSON + JPEG pairs (pipelines.store_json_jpeg)
PAIRS_VALID = "pairs_valid"
INSTANCES_BUILT = "instances_built"


def inc(name: str, value: int = 1) -> None:
    if value:
        Metrics.counter(NAMESPACE, name).inc(value)


def count_dead_letter(letter: DeadLetter) -> None:
    inc(DEAD_LETTERS)
    inc(FAILED_PREFIX + letter.reason)


# search (QIDO-RS)
SEARCH_QUERIES = "search_queries"  # queries answered completely
SEARCH_MATCHES_PREFIX = "search_matches_"  # + level: matches delivered
QIDO_PAGES = "qido_pages"
QIDO_SPLITS = "qido_splits"  # searches split past the server's offset cap


# --- retrieve (WADO-RS) family ---
FILES_RETRIEVED = "files_retrieved"
FILES_ALREADY_COMPLETE = "files_already_complete"
BYTES_RETRIEVED = "bytes_retrieved"
UNITS_RETRIEVED = "retrieve_units"
# --- store hardening ---------------------------------------------------------------------
FILES_MATCHED = "files_matched"  # distinct paths the input patterns matched
INSTANCES_DUPLICATE = "instances_duplicate"  # byte-identical copies given their twin's outcome
EXISTENCE_CHECKS_FAILED = "existence_checks_failed"  # study lookups that failed (sent anyway)
# Beam's own names for time spent backing off, which Dataflow's autoscaler reads so that it
# does not add workers for a throttled server: seconds (the Python SDK's IOs, e.g.
# apache_beam/io/requestresponse.py) and milliseconds (the name the Java SDK uses).
BEAM_THROTTLING_SECONDS = "cumulativeThrottlingSeconds"
BEAM_THROTTLING_MSECS = "throttling-msecs"


def add_throttled(seconds: float) -> None:
    """Back-off time: in ms for the summary, and in Beam's throttling counter for Dataflow."""
    if seconds <= 0:
        return
    inc(THROTTLED_MS, int(seconds * 1000))
    inc(BEAM_THROTTLING_MSECS, int(seconds * 1000))
    # Whole seconds only; rounding up keeps short waits visible to the autoscaler.
    Metrics.counter(NAMESPACE, BEAM_THROTTLING_SECONDS).inc(max(1, round(seconds)))
