"""With --no_preflight the launcher makes no request to the store: every job is run for real (on
the in-process runner, where ``Pipeline.run()`` returns when the pipeline is done) against a
server that records when each request arrives; a request outside the time ``Pipeline.run()`` was
running came from the launcher. The pipeline itself does reach the server (so the check is not
vacuous), and without --no_preflight the launcher's preflight request is seen outside."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from job_inputs import JOBS, job_inputs
from loopback_server import LoopbackHTTPServer


class _Recorder(BaseHTTPRequestHandler):
    """Answers a search (GET) with no match and anything else with 404; records each request."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        server: Any = self.server
        with server.lock:
            server.arrivals.append((time.monotonic(), self.command))
        body, status = (b"[]", 200) if self.command == "GET" else (b"", 404)
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Any]:
    server: Any = LoopbackHTTPServer(("127.0.0.1", 0), _Recorder)
    server.lock = threading.Lock()
    server.arrivals = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.close_all()
        server.server_close()


@pytest.fixture
def run_windows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """(start, end) of every outermost ``Pipeline.run()`` of the test."""
    windows: list[tuple[float, float]] = []
    original = beam.Pipeline.run
    depth = [0]

    def run(self: beam.Pipeline, *args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        start = time.monotonic()
        try:
            return original(self, *args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                windows.append((start, time.monotonic()))

    monkeypatch.setattr(beam.Pipeline, "run", run)
    return windows


def _argv(job: str, url: str, tmp_path: Path) -> list[str]:
    common = ["--dicomweb_url", url, "--output", str(tmp_path / "out"), "--max_attempts", "1"]
    extra = ["--yes", "--max_targets", "1"] if job == "delete" else []
    return [*common, *job_inputs(job, tmp_path), *extra]


def _split(
    arrivals: list[tuple[float, str]], windows: list[tuple[float, float]]
) -> tuple[list[str], list[str]]:
    inside = [m for t, m in arrivals if any(a <= t <= b for a, b in windows)]
    outside = [m for t, m in arrivals if not any(a <= t <= b for a, b in windows)]
    return inside, outside


@pytest.mark.parametrize("job", JOBS)
def test_no_preflight_means_no_request_from_the_launcher(
    job: str, recorder: Any, run_windows: list[tuple[float, float]], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{recorder.server_address[1]}/dicom-web"
    module = importlib.import_module(f"pipelines.{job}")
    code = module.main([*_argv(job, url, tmp_path), "--no_preflight"])
    assert code in (0, 3)
    assert len(run_windows) == 1, "one pipeline per job"
    inside, outside = _split(recorder.arrivals, run_windows)
    assert outside == [], f"the launcher made {len(outside)} request(s) with --no_preflight"
    assert inside, "the pipeline itself reached the server"


def test_the_check_sees_a_launcher_request(
    recorder: Any, run_windows: list[tuple[float, float]], tmp_path: Path
) -> None:
    """The control: with preflight, the launcher's one search is seen outside the run."""
    from pipelines import search

    url = f"http://127.0.0.1:{recorder.server_address[1]}/dicom-web"
    assert search.main(_argv("search", url, tmp_path)) == 0
    inside, outside = _split(recorder.arrivals, run_windows)
    assert outside == ["GET"] and inside
