"""Beam's own ``UploadToDicomStore``, as a process of its own, pointed at a non-Google server.

    python benchmarks/beam_upload.py --input 'DIR/*.dcm' --base_url http://127.0.0.1:PORT \\
        [--max_workers 8] [--buffer_size 8]

The pipeline is ``MatchFiles | ReadMatches | UploadToDicomStore(input_type="fileio")`` on the
FnApiRunner (what ``pipelines.store`` runs on by default). ``UploadToDicomStore`` only knows
Google's URL: its client, ``DicomApiHttpClient``, builds
``{healthcare_base_url}/projects/{p}/locations/{r}/datasets/{d}/dicomStores/{s}/dicomWeb/studies``
from a class attribute, and ``UploadToDicomStore`` accepts a ``client=``. So we give it a
``DicomApiHttpClient`` whose instance attribute ``healthcare_base_url`` is ``--base_url`` (the
sink answers that Google-style path too), and ``credential=AnonymousCredentials()`` so its
``google.auth`` ``AuthorizedSession`` sends no token and asks no metadata server. Nothing else is
changed: one single-part ``application/dicom`` POST per instance, ``max_workers`` threads per
``buffer_size`` elements, as Beam does it.

Prints one JSON line ``{"ok": N, "failed": M, "pipeline_seconds": S}`` (``S``: ``run()`` to the
end); exits 0 only when every match was answered 200.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.gcp.healthcare.dicomclient import DicomApiHttpClient
from apache_beam.io.gcp.healthcare.dicomio import UploadToDicomStore
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from google.auth.credentials import AnonymousCredentials

_NAMESPACE = "bench"
_DESTINATION = {"project_id": "p", "region": "r", "dataset_id": "d", "dicom_store_id": "s"}


def _count(result: dict[str, object]) -> None:
    Metrics.counter(_NAMESPACE, "ok" if result.get("success") else "failed").inc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--base_url", required=True, help="replaces healthcare.googleapis.com/v1")
    parser.add_argument("--max_workers", type=int, default=8)
    parser.add_argument("--buffer_size", type=int, default=8)
    args = parser.parse_args(argv)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    client = DicomApiHttpClient()
    client.healthcare_base_url = args.base_url.rstrip("/")
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner", "FnApiRunner"]))
    _ = (
        pipeline
        | fileio.MatchFiles(args.input)
        | fileio.ReadMatches()
        | UploadToDicomStore(
            _DESTINATION,
            "fileio",
            buffer_size=args.buffer_size,
            max_workers=args.max_workers,
            client=client,
            credential=AnonymousCredentials(),
        )
        | beam.Map(_count)
    )
    start = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    counts = {"ok": 0, "failed": 0}
    for counter in result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE))["counters"]:
        counts[counter.key.metric.name] += counter.committed or counter.attempted or 0
    print(json.dumps(counts | {"pipeline_seconds": seconds}), flush=True)
    return 0 if counts["ok"] > 0 and counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
