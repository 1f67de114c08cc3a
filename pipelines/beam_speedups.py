"""Less of Beam's own fixed cost per job: answers Beam works out again and again, kept, and a
wait at the end of every long bundle, shortened.

While a job parses its options, builds its graph and runs it, Beam repeats two pieces of work
whose answers cannot change, and waits once per bundle for nothing:

* **Options views.** ``options.view_as(SomeOptions)`` builds a new argparse parser for that
  class and parses the whole command line again, every time; Beam calls it about twice per
  transform applied (type checks, the runner), some 170 times for ``pipelines.store``. The
  view only reads and writes the options' shared value store, so one view per options object
  and class serves every caller. Measured 2026-12-01 on a one-file store job: the work before
  ``pipeline.run()`` (options, preflight, graph) went from 0.44 to 0.28 s, median of six.
* **DoFn state and timers.** ``userstate.get_dofn_specs(dofn)`` is asked about six times per
  ParDo (construction, validation, translation, the runner's checks), and each time wraps every
  method of the DoFn, the ~30 inherited from ``DoFn`` included, to run ``inspect.signature``
  on it: about 2,700 signatures for the store job's 14 ParDos. Kept per DoFn instance, every
  caller getting copies of the sets: the same job's ``pipeline.run()`` went from 0.30 to
  0.19 s, median of six.

* **The state sampler's last sleep.** Each bundle runs with a sampler thread that wakes at
  growing intervals, up to 200 ms, to account the time of each step; stopping it at the end of
  the bundle joins that thread, so a bundle longer than about a second ends 0-200 ms after its
  work (the thread's sleep cannot be cut short). For the 1 GiB series retrieve, the time from
  the last file written to ``pipeline.run()`` returning was 0.08-0.23 s, the job's own times
  fell on steps of about 0.2 s, and the main thread spent most of that tail in the join. While
  the context is open, samplers are made with a 10 ms period: a bundle ends at most 10 ms
  after its work, for one wake-up every 10 ms of a bundle (a lock taken, no Python code).

The first two are kept per object *instance*, by identity checked through a weak reference (an
object that cannot be weakly referenced is not kept), only while the context is open; Beam's own
functions compute every first answer, and errors are not kept (raised again on every call).
Workers (Dataflow, multi-process runners) unpickle their own objects and run their own bundles:
none of the three reaches them.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate

_Specs = tuple[set[Any], set[Any]]
SAMPLING_PERIOD_MS = 10  # Beam's default: statesampler.DEFAULT_SAMPLING_PERIOD_MS (200)

_lock = threading.Lock()
_depth = 0
_beams_specs: Callable[[Any], _Specs] | None = None
_beams_view_as: Callable[[PipelineOptions, type[Any]], Any] | None = None
_beams_sampler_defaults: tuple[Any, ...] | None = None
_specs: dict[Any, tuple[weakref.ref[Any], Any]] = {}  # id(dofn) -> (dofn, specs)
_views: dict[Any, tuple[weakref.ref[Any], Any]] = {}  # (id(options), cls) -> (options, view)


def _remembered(
    table: dict[Any, tuple[weakref.ref[Any], Any]],
    key: Any,
    owner: Any,
    compute: Callable[[], Any],
) -> Any:
    """``table[key]`` while ``owner`` (whose id is in ``key``) is alive, else ``compute()``,
    kept when ``owner`` can be weakly referenced. An exception of ``compute`` is not kept."""
    entry = table.get(key)
    if entry is not None and entry[0]() is owner:
        return entry[1]
    value = compute()
    try:
        table[key] = (weakref.ref(owner), value)
    except TypeError:  # cannot be weakly referenced: not kept
        pass
    return value


def _kept_specs(dofn: Any) -> _Specs:
    assert _beams_specs is not None
    beams = _beams_specs
    states, timers = _remembered(_specs, id(dofn), dofn, lambda: beams(dofn))
    return set(states), set(timers)  # copies: a caller may change what it gets


def _kept_view(options: PipelineOptions, cls: type[Any]) -> Any:
    assert _beams_view_as is not None
    beams = _beams_view_as
    return _remembered(_views, (id(options), cls), options, lambda: beams(options, cls))


@contextlib.contextmanager
def beam_work_kept() -> Iterator[None]:
    """Around a job's whole ``run()`` (also usable as a decorator); reentrant, thread-safe.

    Beam's functions are restored when the outermost context closes."""
    global _depth, _beams_specs, _beams_view_as, _beams_sampler_defaults
    sampler_init = statesampler.StateSampler.__init__
    with _lock:
        if _depth == 0:
            _beams_specs = userstate.get_dofn_specs
            _beams_view_as = PipelineOptions.view_as
            _beams_sampler_defaults = sampler_init.__defaults__
            userstate.get_dofn_specs = _kept_specs
            PipelineOptions.view_as = _kept_view  # type: ignore[assignment,method-assign]
            # The default of its ``sampling_period_ms``, the one argument with a default; the
            # bundle processor passes none.
            sampler_init.__defaults__ = (SAMPLING_PERIOD_MS,)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                userstate.get_dofn_specs = _beams_specs  # type: ignore[assignment]
                PipelineOptions.view_as = _beams_view_as  # type: ignore[assignment,method-assign]
                sampler_init.__defaults__ = _beams_sampler_defaults
                _beams_specs = _beams_view_as = _beams_sampler_defaults = None
                _specs.clear()
                _views.clear()
