"""PooledFn: the life cycle every network DoFn shares (one pool per process and transform,
work in flight bounded, outputs emitted on the bundle's thread, set-up failures kept)."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pytest
import requests
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.dicomweb.auth import AuthConfig
from transforms.errors import SetupError
from transforms.pooled import PooledFn


@dataclass
class _Pool:
    executor: concurrent.futures.ThreadPoolExecutor


_created: list[str] = []
_closed: list[str] = []


def _close(shared: Any) -> None:
    shared.executor.shutdown(wait=True)
    _closed.append("closed")


class _SquareFn(PooledFn[_Pool]):
    def create_shared(self) -> _Pool:
        _created.append(self._pool_key)
        return _Pool(concurrent.futures.ThreadPoolExecutor(self._max_concurrency))

    close_shared = staticmethod(_close)

    def process(
        self,
        n: int,
        window: BoundedWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> Iterator[object]:
        shared = self.shared()
        if shared is None:
            self.fail_unset(context=(n, window, timestamp))
        else:
            self.submit(shared.executor, _square_on_pool, n, context=(n, window, timestamp))
        yield from self.collect(keep=self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        n, window, timestamp = context
        try:
            square, thread = future.result()
        except SetupError as exc:
            yield WindowedValue((n, f"{exc.reason}: {exc.message}"), timestamp, (window,))
            return
        assert thread != threading.current_thread().name  # the work ran on the pool
        # WindowedValues: what is left in flight is emitted from finish_bundle.
        yield WindowedValue((n, square), timestamp, (window,))


def _square_on_pool(n: int) -> tuple[int, str]:
    return n * n, threading.current_thread().name


def _fn(key: str, factory: Any = None) -> _SquareFn:
    return _SquareFn(auth=AuthConfig(), max_concurrency=3, pool_key=key, session_factory=factory)


def test_every_element_is_emitted_once_with_its_context_after_the_pool_ran_it() -> None:
    with TestPipeline() as p:
        out = p | beam.Create(range(40)) | beam.ParDo(_fn(f"t-{uuid.uuid4().hex}"))
        assert_that(out, equal_to([(n, n * n) for n in range(40)]))


def test_instances_of_one_transform_share_one_pool_closed_by_the_last() -> None:
    key = f"t-{uuid.uuid4().hex}"
    first, second = _fn(key), _fn(key)
    before_created, before_closed = len(_created), len(_closed)
    first.setup()
    second.setup()
    assert first.shared() is second.shared()
    assert len(_created) == before_created + 1
    first.teardown()
    assert len(_closed) == before_closed  # still used by the second
    second.teardown()
    assert len(_closed) == before_closed + 1


class _NoCredentialsFn(_SquareFn):
    def create_shared(self) -> _Pool:
        # The factory raises, as credentials that cannot be built do.
        self.new_session("http://127.0.0.1:9/dicom-web")
        raise AssertionError("not reached")


def _no_credentials() -> requests.Session:
    raise OSError("no credentials here")


def _unset_fn() -> _NoCredentialsFn:
    return _NoCredentialsFn(
        auth=AuthConfig(),
        max_concurrency=2,
        pool_key=f"t-{uuid.uuid4().hex}",
        session_factory=_no_credentials,
    )


def test_a_set_up_failure_is_kept_as_a_reason_not_raised() -> None:
    fn = _unset_fn()
    fn.setup()  # does not raise: the elements become dead letters instead
    assert fn.setup_error is not None
    assert "cannot set up the HTTP session" in fn.setup_error
    assert "OSError" in fn.setup_error
    assert fn.shared() is None
    fn.teardown()  # nothing to release


def test_after_a_set_up_failure_every_element_gets_the_failure_and_nothing_runs() -> None:
    with TestPipeline() as p:
        out = p | beam.Create(range(5)) | beam.ParDo(_unset_fn())
        assert_that(
            out,
            equal_to(
                [
                    (
                        n,
                        "credentials_error: cannot set up the HTTP session "
                        "(OSError: no credentials here)",
                    )
                    for n in range(5)
                ]
            ),
        )


def test_every_session_reads_the_environment_once_for_its_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Store, search, retrieve, delete and JSON+JPEG sessions all come from new_session: the
    proxy, CA bundle and netrc settings are resolved there for the store's URL, not per request."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "store.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    fn = _SquareFn(
        auth=AuthConfig(), max_concurrency=2, pool_key=uuid.uuid4().hex, session_factory=None
    )
    near = fn.new_session("https://store.example/dicom-web")
    assert near.trust_env is False and "https" not in near.proxies  # NO_PROXY kept
    assert near.verify == "/etc/ssl/bundle.pem"  # TLS verification stays on
    far = fn.new_session("https://other.example/dicom-web")
    assert far.proxies["https"] == "http://proxy.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://changed.example:1")  # read once: not seen now
    merged = far.merge_environment_settings("https://other.example/x", {}, None, None, None)
    assert merged["proxies"]["https"] == "http://proxy.example:3128"
