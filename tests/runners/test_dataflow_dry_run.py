"""Every job's Dataflow job built offline (``--dry_run=True``: Beam translates and pickles the
whole graph without submitting): the expected transforms are there, no step captures the token
or a session, the launcher makes no request with ``--no_preflight``, and the job's summary says
the run has no metrics instead of crashing or printing zeros."""

from __future__ import annotations

import base64
import binascii
import bz2
import importlib
import json
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from job_inputs import job_inputs

from pipelines.summary import MetricsUnavailable

TOKEN = "planted-7f3c9e1d-token-never-in-a-graph"
DATAFLOW = [
    "--runner", "DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
    "--project", "dwb-test", "--region", "us-central1",
    "--temp_location", "gs://dwb-test-bucket/tmp",
]  # fmt: skip

EXPECTED = {
    "store": {"ReadDicomFiles", "WriteToDicomStore", "WriteResults"},
    "search": {"SelectQueries", "SearchDicomStore", "WriteResults"},
    "retrieve": {"ReadUidsFile", "RetrieveFromDicomStore", "WriteResults"},
    # One job: plan, the --max_targets gate (a side input inside DeleteFromDicomStore), deletes.
    "delete": {
        "ReadUidsFile",
        "PlanDeletes",
        "WritePlan",
        "DeleteFromDicomStore",
        "WriteResults",
    },
    "store_json_jpeg": {"ReadJsonJpegPairs", "StoreJsonJpegPairs", "WriteResults"},
}


@pytest.fixture
def silent_store() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket nobody accepts on: any connection the launcher makes waits in its
    backlog, where the test finds it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/dicom-web", sock
    finally:
        sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def _job_argv(job: str, url: str, tmp_path: Path) -> list[str]:
    common = ["--dicomweb_url", url, "--auth", "bearer", "--token_env", "DWB_PLANTED_TOKEN",
              "--no_preflight", "--output", str(tmp_path / "out")]  # fmt: skip
    extra = ["--yes", "--delete_api", "dicomweb"] if job == "delete" else []
    return [*common, *job_inputs(job, tmp_path), *extra]


def _blobs(pipeline: beam_runner_api_pb2.Pipeline) -> Iterator[bytes]:
    """Every payload of the graph, pickled DoFns decoded (Beam stores them zlib + base64)."""
    yield pipeline.SerializeToString()
    for transform in pipeline.components.transforms.values():
        payloads = [transform.spec.payload]
        if transform.spec.urn == "beam:transform:pardo:v1":
            pardo = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            payloads.append(pardo.do_fn.payload)
        for data in transform.display_data:
            payloads.append(data.payload)
        for payload in payloads:
            yield payload
            yield from _unpickled_bytes(payload)


def _unpickled_bytes(payload: bytes) -> Iterator[bytes]:
    """A pickled object's bytes: Beam's pickler gives base64 of zlib or bz2 of the pickle."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return
    for decompress in (zlib.decompress, bz2.decompress):
        try:
            yield decompress(raw)
            return
        except (zlib.error, OSError, ValueError):
            continue


@pytest.mark.parametrize("job", sorted(EXPECTED))
def test_dataflow_dry_run_builds_a_clean_graph_offline(
    job: str,
    silent_store: tuple[str, socket.socket],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, sock = silent_store
    monkeypatch.setenv("DWB_PLANTED_TOKEN", TOKEN)
    module = importlib.import_module(f"pipelines.{job}")
    argv = [*_job_argv(job, url, tmp_path), *DATAFLOW]
    with pytest.raises(MetricsUnavailable) as caught:
        module.run(argv)
    dataflow_job = caught.value.result.job  # type: ignore[attr-defined]
    pipeline = dataflow_job.proto_pipeline
    labels = {t.unique_name.split("/")[0] for t in pipeline.components.transforms.values()}
    assert EXPECTED[job] <= labels
    if job == "delete":
        names = {t.unique_name for t in pipeline.components.transforms.values()}
        assert "DeleteFromDicomStore/GateOnMaxTargets/CountToDelete" in names
    blobs = [*_blobs(pipeline), json.dumps(dataflow_job.json()).encode()]
    # The scan sees inside the pickled DoFns: the auth settings they carry name the variable.
    assert any(b"DWB_PLANTED_TOKEN" in b and b"transforms." in b for b in _blobs(pipeline))
    for blob in blobs:
        assert TOKEN.encode() not in blob
        assert b"requests.sessions" not in blob and b"google.auth.credentials" not in blob
        assert b"Authorization" not in blob
    assert _connections(sock) == 0, "the launcher made a request with --no_preflight"

    # The job itself: the summary says there are no counts; exit 0, no traceback.
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "--dry_run" in out and "no counts" in out
    assert "stored      " not in out and "failed      " not in out
    assert _connections(sock) == 0
