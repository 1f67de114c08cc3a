"""What the retrieve client resolves once per worker instead of once per request."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from transforms.dicomweb.auth import settle_environment
from transforms.output_files import SPOOL_DIR, OutputFiles

URL = "http://store.example:8042/dicom-web"


def test_proxies_and_ca_bundle_are_read_once_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = requests.Session()
    settle_environment(session, URL)
    assert session.trust_env is False
    assert session.proxies["http"] == "http://proxy.example:3128"
    assert session.verify == "/etc/ssl/bundle.pem"  # still verifying, with the named bundle
    # What requests would now merge for a request: the same, without reading the environment.
    monkeypatch.setenv("HTTP_PROXY", "http://other.example:1")
    merged = session.merge_environment_settings(URL, {}, None, None, None)
    assert merged["proxies"]["http"] == "http://proxy.example:3128"


def test_no_proxy_for_the_store_and_own_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "store.example")
    session = requests.Session()
    session.verify = False  # a caller's explicit choice is not replaced
    settle_environment(session, URL)
    assert "http" not in session.proxies
    assert session.verify is False

    explicit = requests.Session()
    explicit.proxies["http"] = "http://mine.example:8080"
    explicit.trust_env = False  # a session that ignores the environment stays as it is
    settle_environment(explicit, URL)
    assert explicit.proxies == {"http": "http://mine.example:8080"} and explicit.auth is None


def test_spool_directory_removed_by_another_worker_is_made_again(tmp_path: Path) -> None:
    files = OutputFiles(str(tmp_path / "out"))
    first = files.spool()
    first.write(b"a")
    files.commit(first, "s/a.dcm")
    # Another worker process of the same output finishes: its cleanup removes the empty folder.
    OutputFiles(files.prefix).cleanup()
    assert not (tmp_path / "out" / SPOOL_DIR).exists()
    second = files.spool()  # the directory is known made, but is gone: made again
    second.write(b"bb")
    path = files.commit(second, "s/b.dcm")
    assert Path(path).read_bytes() == b"bb" and (tmp_path / "out/s/a.dcm").read_bytes() == b"a"
    assert first.path != second.path


def test_a_large_spool_writes_and_hashes_beside_the_reader(tmp_path: Path) -> None:
    import hashlib  # noqa: PLC0415

    files = OutputFiles(str(tmp_path))
    spool = files.spool()
    block = bytes(range(256)) * 4096  # 1 MiB
    data = [block[i:] for i in range(9)]  # 9 MiB in all, every piece different
    for piece in data:
        spool.write(memoryview(piece))
    assert spool._writer is not None  # noqa: SLF001 - past 4 MiB, in its own thread
    expected = hashlib.sha256(b"".join(data)).hexdigest()
    path = files.commit(spool, "big.dcm")
    assert spool.sha256 == expected and spool.size == sum(map(len, data))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == expected


def test_an_error_of_the_spool_thread_reaches_the_writer(tmp_path: Path) -> None:
    files = OutputFiles(str(tmp_path))
    spool = files.spool()
    spool.write(bytes(5 << 20))  # the thread starts
    assert spool._file is not None  # noqa: SLF001
    spool._file.close()  # noqa: SLF001 - the disk goes away: the thread's write fails
    with pytest.raises(ValueError):  # writing to a closed file
        for _ in range(10):
            spool.write(bytes(1 << 20))
        spool.close()
    spool.discard()
    assert not Path(spool.path).exists()
