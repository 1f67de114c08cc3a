"""A throw-away Orthanc + DICOMweb plugin on loopback, for the demo, the tests and benchmarks.

It uses Debian's packages (``apt-get install orthanc orthanc-dicomweb``), free ports and a
temporary storage directory, and is gone when stopped.

    with LocalOrthanc() as orthanc:
        print(orthanc.dicomweb_url)   # http://127.0.0.1:PORT/dicom-web

Run ``python -m pipelines.local_orthanc`` to keep one running until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

ORTHANC_BINARY = "Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
INSTALL_HINT = "install it with: sudo apt-get install -y orthanc orthanc-dicomweb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def orthanc_available() -> bool:
    return shutil.which(ORTHANC_BINARY) is not None and os.path.exists(DICOMWEB_PLUGIN)


class LocalOrthanc:
    """An Orthanc process with the DICOMweb plugin on 127.0.0.1.

    Args:
      workdir: where to keep its configuration, storage and log (a temp dir by default,
        removed on stop).
    """

    def __init__(self, workdir: Path | None = None, http_port: int | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="orthanc-"))
        self.http_port = http_port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def start(self, timeout: float = 30.0) -> LocalOrthanc:
        if not orthanc_available():
            raise RuntimeError(f"Orthanc or its DICOMweb plugin is missing; {INSTALL_HINT}")
        config = {
            "Name": "dicomweb-beam-local",
            "HttpPort": self.http_port,
            "DicomPort": free_port(),
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "KeepAlive": True,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        self.workdir.mkdir(parents=True, exist_ok=True)  # --workdir may name a new directory
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [ORTHANC_BINARY, str(config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start; see {self.log_path}")
            try:
                if requests.get(f"{self.rest_url}/system", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is not None:
            if self._own_workdir:
                self._process.kill()  # its data is about to be deleted: no need to wait for it
            else:
                self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def delete_all(self) -> None:
        """Empty the store (Orthanc's REST API: DICOMweb has no DELETE here)."""
        for study_id in requests.get(f"{self.rest_url}/studies", timeout=30).json():
            requests.delete(f"{self.rest_url}/studies/{study_id}", timeout=30).raise_for_status()

    def instance_count(self) -> int:
        stats = requests.get(f"{self.rest_url}/statistics", timeout=30).json()
        return int(stats["CountInstances"])

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.local_orthanc",
        description="A throw-away Orthanc with DICOMweb on 127.0.0.1, to try the jobs on.",
    )
    parser.add_argument("--port", type=int, default=8042, help="HTTP port (default: 8042)")
    parser.add_argument("--workdir", type=Path, help="keep its store here (default: a temp dir)")
    cli = parser.parse_args()
    with LocalOrthanc(cli.workdir, cli.port) as server:
        print(f"DICOMweb at {server.dicomweb_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
