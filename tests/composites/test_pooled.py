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
        self.submit(self.shared().executor, _square_on_pool, n, context=(n, window, timestamp))
        yield from self.collect(keep=self._max_concurrency)

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        n, window, timestamp = context
        square, thread = future.result()
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


def test_a_set_up_failure_is_kept_as_a_reason_and_named_when_the_pool_is_asked_for() -> None:
    def no_credentials() -> requests.Session:
        raise OSError("no credentials here")

    class _SessionFn(_SquareFn):
        def create_shared(self) -> _Pool:
            self.new_session()
            raise AssertionError("not reached")

    fn = _SessionFn(
        auth=AuthConfig(),
        max_concurrency=2,
        pool_key=f"t-{uuid.uuid4().hex}",
        session_factory=no_credentials,
    )
    fn.setup()  # does not raise: a subclass decides what its elements become
    assert fn.setup_error is not None
    assert "cannot set up the HTTP session" in fn.setup_error
    assert "OSError" in fn.setup_error
    with pytest.raises(RuntimeError, match="cannot set up the HTTP session"):
        fn.shared()
    fn.teardown()  # nothing to release
