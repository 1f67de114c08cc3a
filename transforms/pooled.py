"""The base of every DoFn whose requests run on a pool its worker process shares.

Each network step of this project works the same way: ``setup()`` acquires the process's
session, client and thread pools (one set per transform and process, so ``max_concurrency`` is a
true per-worker bound however many DoFn instances Beam runs), ``process()`` submits an element's
work to a pool and keeps it in flight, and finished work is turned into outputs on the bundle's
own thread (Beam counters and outputs only count there), some during ``process()`` to keep memory
bounded and the rest in ``finish_bundle()``. ``PooledFn`` holds that life cycle once; a subclass
says what it shares (``create_shared`` / ``close_shared``), what it submits, and what a finished
piece of work emits (``emit``).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import apache_beam as beam
import requests

from transforms.dead_letter import Reason
from transforms.dicomweb import concurrency
from transforms.dicomweb.auth import AuthConfig, make_session, settle_environment
from transforms.errors import SetupError, describe_exception
from transforms.inflight import InFlight

_log = logging.getLogger(__name__)

SharedT = TypeVar("SharedT")
SessionFactory = Callable[[], requests.Session]


class PooledFn(beam.DoFn, Generic[SharedT]):
    """A DoFn running its work on resources shared by its worker process.

    Args:
      auth: credentials, built on each worker.
      max_concurrency: pieces of work in flight per worker process at most (the pool's size).
      pool_key: names the shared resources: one key per transform instance.
      session_factory: builds the HTTP session instead of ``auth`` (tests, custom transports).
    """

    def __init__(
        self,
        *,
        auth: AuthConfig,
        max_concurrency: int,
        pool_key: str,
        session_factory: SessionFactory | None,
    ) -> None:
        self._auth = auth
        self._max_concurrency = max_concurrency
        self._pool_key = pool_key
        self._session_factory = session_factory
        self._shared: SharedT | None = None
        self.setup_error: str | None = None
        self._inflight: InFlight[Any] = InFlight()

    # What a subclass says.
    def create_shared(self) -> SharedT:
        """Builds the process's resources (called once per process and transform)."""
        raise NotImplementedError

    @staticmethod
    def close_shared(shared: Any) -> None:
        """Closes what ``create_shared`` built, once its last user is torn down."""
        raise NotImplementedError

    def emit(self, future: concurrent.futures.Future[Any], context: Any) -> Iterator[object]:
        """Outputs for one finished piece of work, on the bundle's thread: ``WindowedValue``s
        (or tagged ones), since what is still in flight at the end is emitted from
        ``finish_bundle``; keep the window and timestamp in the work's ``context``."""
        raise NotImplementedError

    # What it gets.
    def new_session(self, url: str, pool_size: int | None = None) -> requests.Session:
        """A pooled session for the store at ``url``, with what ``requests`` would read from
        the environment on every request (proxies, CA bundle, netrc) read once, here."""
        session = make_session(
            self._auth,
            pool_size=pool_size or self._max_concurrency,
            factory=self._session_factory,
        )
        settle_environment(session, url)
        return session

    def shared(self) -> SharedT | None:
        """The process's resources; None when the set-up failed (``setup_error`` says why).

        A method, not a property: Beam reads every attribute of a DoFn when it checks it."""
        return self._shared

    def submit(
        self,
        executor: concurrent.futures.Executor,
        work: Callable[..., Any],
        *args: Any,
        context: Any,
    ) -> None:
        self._inflight.add(executor.submit(work, *args), context)

    def fail_unset(self, context: Any) -> None:
        """For an element that needs the resources when the set-up failed: nothing runs, and
        its future holds a ``SetupError`` that ``emit`` turns into dead letters (reason
        ``credentials_error``) like any other failure of that work."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_exception(
            SetupError(Reason.CREDENTIALS_ERROR, self.setup_error or "no HTTP session")
        )
        self._inflight.add(future, context)

    def collect(self, keep: int) -> Iterator[object]:
        """Emits finished work, oldest first, until at most ``keep`` pieces are in flight."""
        for future, context in self._inflight.finished(keep):
            yield from self.emit(future, context)

    # Beam's life cycle.
    def setup(self) -> None:
        self.setup_error = None
        try:
            self._shared = concurrency.acquire(
                self._pool_key, self.create_shared, self.close_shared
            )
        except Exception as exc:
            # Credentials that cannot be built (an unset variable, no Application Default
            # Credentials...): kept, so a subclass can dead-letter its elements with the reason.
            self.setup_error = f"cannot set up the HTTP session ({describe_exception(exc)})"
            _log.error("%s", self.setup_error)

    def start_bundle(self) -> None:
        self._inflight = InFlight()

    def finish_bundle(self) -> Iterator[object]:
        yield from self.collect(keep=0)

    def teardown(self) -> None:
        if self._shared is not None:
            concurrency.release(self._pool_key)
            self._shared = None
