"""Results of the public transforms: small NamedTuples of PCollections.

Beam names the outputs after the fields, so ``result.failed`` shows up as ``.../failed``.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam


class ReadResult(NamedTuple):
    files: beam.PCollection  # DicomFile
    failed: beam.PCollection  # DeadLetter


class StoreResult(NamedTuple):
    stored: beam.PCollection  # StoredInstance (stored now or already present)
    failed: beam.PCollection  # DeadLetter


class SearchResult(NamedTuple):
    matches: beam.PCollection  # SearchMatch (only of queries answered completely)
    failed: beam.PCollection  # DeadLetter: one per failed query


class QueriesResult(NamedTuple):
    queries: beam.PCollection  # SearchQuery
    failed: beam.PCollection  # DeadLetter: lines of a queries file that are not queries


# delete family
class PlanResult(NamedTuple):
    planned: beam.PCollection  # PlannedDelete (to delete, or already absent)
    failed: beam.PCollection  # DeadLetter


class DeleteResult(NamedTuple):
    deleted: beam.PCollection  # DeletedTarget (deleted now, or already absent)
    failed: beam.PCollection  # DeadLetter


# --- retrieve (WADO-RS) family ---
class RetrieveResult(NamedTuple):
    retrieved: beam.PCollection  # RetrievedFile (written now, or found complete by a re-run)
    failed: beam.PCollection  # DeadLetter


# JSON + JPEG pairs (pipelines.store_json_jpeg)
class PairsResult(NamedTuple):
    pairs: beam.PCollection  # PreparedInstance (validated, unique SOP Instance UIDs)
    failed: beam.PCollection  # DeadLetter


class BuildResult(NamedTuple):
    files: beam.PCollection  # DicomFile: a built Part 10 instance
    failed: beam.PCollection  # DeadLetter
