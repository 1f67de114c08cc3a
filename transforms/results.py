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


# JSON + JPEG pairs (pipelines.store_json_jpeg)
class PairsResult(NamedTuple):
    pairs: beam.PCollection  # PreparedInstance (validated, unique SOP Instance UIDs)
    failed: beam.PCollection  # DeadLetter


class BuildResult(NamedTuple):
    files: beam.PCollection  # DicomFile: a built Part 10 instance
    failed: beam.PCollection  # DeadLetter
