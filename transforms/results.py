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


# --- retrieve (WADO-RS) family ---
class RetrieveResult(NamedTuple):
    retrieved: beam.PCollection  # RetrievedFile (written now, or found complete by a re-run)
    failed: beam.PCollection  # DeadLetter
