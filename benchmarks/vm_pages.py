"""Freed memory held in this VM while a benchmark runs (opt-in: ``--hold-freed-pages``).

Why: the VM these figures come from (Firecracker, 2 cores) reports freed guest pages to its host
(the kernel's free page reporting, module ``page_reporting``) about a second after they are
freed, holding back at most ``max_waiting_mib``. A reported page touched again faults on the
host: on 2026-12-01, writing 1 GiB of new files took 3.6-4.3 s of kernel time on reported pages
and 0.3 s on recycled ones (214 against 3,300 MiB/s, same loop). Each side of a benchmark
writes GiBs, deletes them, and the next side meets recycled or reported pages depending on how
long the side before took and how much it freed: a noise of 3 to 10 times that has nothing to
do with the code measured, and that hit one side or the other at random.

Raising ``min_free_ms`` (how long a freed page waits before it is reported) and
``max_waiting_mib`` (how much may wait) while the benchmark runs lets every side after the
untimed warm-up meet recycled pages, as on a machine without a balloon (a laptop, a Dataflow
worker). The earlier values are restored on exit. Needs root; elsewhere it says why it did
nothing, and the benchmark runs as it would without the option.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARAMETERS = Path("/sys/module/page_reporting/parameters")
HELD = {"min_free_ms": "120000", "max_waiting_mib": "16384"}  # the kernel refuses 600000 ms


@contextmanager
def freed_pages_held(enabled: bool, parameters: Path = PARAMETERS) -> Iterator[str]:
    """Hold freed pages for the duration; yields what was done, for the benchmark's log."""
    if not enabled:
        yield "not held (free page reporting as the machine has it)"
        return
    before: dict[str, str] = {}
    name = ""
    try:
        for name, value in HELD.items():
            path = parameters / name
            before[name] = path.read_text().strip()
            path.write_text(value)
    except OSError as exc:
        _restore(parameters, before)
        yield f"not held: {type(exc).__name__} on {parameters / name} ({exc.strerror or exc})"
        return
    try:
        yield "held: " + ", ".join(f"{n} {before[n]} -> {v}" for n, v in HELD.items())
    finally:
        _restore(parameters, before)


def _restore(parameters: Path, before: dict[str, str]) -> None:
    for name, value in before.items():
        try:
            (parameters / name).write_text(value)
        except OSError:
            pass
