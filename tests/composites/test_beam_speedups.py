"""Beam's repeated work kept while a job runs: DoFn specs and options views (beam_speedups)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.transforms.timeutil import TimeDomain

from pipelines import beam_speedups
from pipelines.beam_speedups import beam_work_kept


class _Plain(beam.DoFn):
    def process(self, element: int) -> Iterator[int]:
        yield element


class _Counting(beam.DoFn):
    """Stateful: a running count per key, and a timer that is never set."""

    COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def process(
        self,
        element: tuple[str, int],
        count: Any = beam.DoFn.StateParam(COUNT),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
    ) -> Iterator[tuple[str, int]]:
        seen = (count.read() or 0) + 1
        count.write(seen)
        yield element[0], seen

    @userstate.on_timer(FLUSH)
    def on_flush(self) -> Iterator[Any]:
        return iter(())


class _Duplicated(beam.DoFn):
    def process(
        self, element: int, a: Any = beam.DoFn.ElementParam, b: Any = beam.DoFn.ElementParam
    ) -> Iterator[int]:
        yield element


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call that reaches Beam's own function, by DoFn."""
    seen: list[object] = []
    beams_own = userstate.get_dofn_specs

    def counted(dofn: Any) -> Any:
        seen.append(dofn)
        return beams_own(dofn)

    monkeypatch.setattr(userstate, "get_dofn_specs", counted)
    return seen


@pytest.mark.parametrize(
    "make", [_Plain, _Counting, lambda: CallableWrapperDoFn(lambda x: [x])], ids=str
)
def test_the_answer_is_beams_and_computed_once_per_dofn(make: Any, calls: list[object]) -> None:
    dofn = make()
    expected = userstate.get_dofn_specs(dofn)
    calls.clear()
    with beam_work_kept():
        answers = [userstate.get_dofn_specs(dofn) for _ in range(5)]
        other = make()
        userstate.get_dofn_specs(other)
    assert all(answer == expected for answer in answers)
    assert calls == [dofn, other]  # one call per instance, not one per question


def test_callers_get_copies(calls: list[object]) -> None:
    dofn = _Counting()
    with beam_work_kept():
        states, _ = userstate.get_dofn_specs(dofn)
        assert len(states) == 1
        states.clear()  # a caller that changes what it got
        again, timers = userstate.get_dofn_specs(dofn)
    assert len(again) == 1 and len(timers) == 1


def test_errors_are_raised_every_time_and_not_kept(calls: list[object]) -> None:
    dofn = _Duplicated()
    with beam_work_kept():
        for _ in range(2):
            with pytest.raises(ValueError, match="duplicate"):
                userstate.get_dofn_specs(dofn)
    assert calls == [dofn, dofn]


def test_beams_function_is_back_after_the_outermost_context(calls: list[object]) -> None:
    installed = userstate.get_dofn_specs
    with beam_work_kept():
        with beam_work_kept():
            pass
        assert userstate.get_dofn_specs is not installed  # the inner exit kept it
        userstate.get_dofn_specs(_Plain())
    assert userstate.get_dofn_specs is installed
    dofn = _Plain()
    userstate.get_dofn_specs(dofn)
    userstate.get_dofn_specs(dofn)
    assert calls[-2:] == [dofn, dofn]  # nothing kept any more


def test_a_stateful_pipeline_runs_the_same_inside() -> None:
    with beam_work_kept(), TestPipeline(runner="FnApiRunner") as p:
        counted = (
            p
            | beam.Create([("a", 1), ("a", 2), ("b", 3), ("a", 4)])
            | beam.ParDo(_Counting())
            | beam.Map(lambda kv: kv[1]).with_input_types(tuple[str, int])
            | beam.CombineGlobally(max)
        )
        assert_that(counted, equal_to([3]))


def test_one_view_per_options_and_class_sharing_the_values() -> None:
    options = PipelineOptions(["--runner", "FnApiRunner", "--project", "p1"])
    other = PipelineOptions(["--project", "p2"])
    with beam_work_kept():
        standard = options.view_as(StandardOptions)
        assert options.view_as(StandardOptions) is standard
        assert options.view_as(GoogleCloudOptions) is not standard
        assert other.view_as(StandardOptions) is not standard
        assert other.view_as(GoogleCloudOptions).project == "p2"
        # Values live in the options' shared store, whichever view writes them.
        standard.runner = "DirectRunner"
        assert options.view_as(StandardOptions).runner == "DirectRunner"
        options.view_as(GoogleCloudOptions).project = "p3"
        assert options.view_as(GoogleCloudOptions).project == "p3"
    # Outside, Beam's own view_as again: a fresh view each time, the values kept.
    assert options.view_as(StandardOptions) is not options.view_as(StandardOptions)
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(GoogleCloudOptions).project == "p3"


def test_a_view_kept_for_an_object_whose_id_is_reused_is_not_served() -> None:
    """Kept by id, checked by identity: what was kept for a dead object whose id a new one
    got (CPython reuses ids, but not on demand, so the entry is planted under the new id)."""
    with beam_work_kept():
        first = PipelineOptions(["--project", "one"])
        stale = first.view_as(GoogleCloudOptions)
        second = PipelineOptions(["--project", "two"])
        beam_speedups._views[(id(second), GoogleCloudOptions)] = (weakref.ref(first), stale)
        view = second.view_as(GoogleCloudOptions)
        assert view is not stale and view.project == "two"
        assert second.view_as(GoogleCloudOptions) is view  # and the right one is kept now


class _SamplerPeriod(beam.DoFn):
    """Yields the sampling period of the state sampler running its bundle."""

    def process(self, element: int) -> Iterator[int]:
        from apache_beam.runners.worker import statesampler  # noqa: PLC0415

        tracker = statesampler.get_current_tracker()
        yield -1 if tracker is None else tracker.sampling_period_ms


def test_bundles_run_with_a_short_sampler_period_inside_and_beams_outside() -> None:
    """Stopping a bundle's sampler waits for the rest of its sleep: 10 ms inside the context
    at most, where Beam's default let a long bundle end up to 200 ms after its work."""
    from apache_beam.runners.worker import statesampler  # noqa: PLC0415

    def bundles_see(period: int) -> None:
        with beam.Pipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
            seen = p | beam.Create([1, 2]) | beam.ParDo(_SamplerPeriod())
            assert_that(seen, equal_to([period, period]))

    default = statesampler.DEFAULT_SAMPLING_PERIOD_MS
    with beam_work_kept():
        bundles_see(beam_speedups.SAMPLING_PERIOD_MS)
        with beam_work_kept():
            pass  # an inner context closing leaves the short period in place
        assert statesampler.StateSampler("x", None).sampling_period_ms == 10
        assert statesampler.StateSampler("x", None, 50).sampling_period_ms == 50  # asked: kept
    assert statesampler.StateSampler("x", None).sampling_period_ms == default == 200
    bundles_see(default)
