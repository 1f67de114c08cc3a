"""benchmarks/vm_pages.py: the VM's free page reporting held while a benchmark runs, and put
back as it was afterwards, also when the benchmark fails; nothing done where it cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.vm_pages import HELD, freed_pages_held


def parameters(tmp_path: Path) -> Path:
    directory = tmp_path / "parameters"
    directory.mkdir()
    (directory / "min_free_ms").write_text("0\n")
    (directory / "max_waiting_mib").write_text("1024\n")
    return directory


def values(directory: Path) -> dict[str, str]:
    return {name: (directory / name).read_text().strip() for name in HELD}


def test_held_while_running_and_restored_after(tmp_path: Path) -> None:
    directory = parameters(tmp_path)
    with freed_pages_held(True, directory) as said:
        assert values(directory) == HELD
        assert said == "held: min_free_ms 0 -> 120000, max_waiting_mib 1024 -> 16384"
    assert values(directory) == {"min_free_ms": "0", "max_waiting_mib": "1024"}


def test_restored_when_the_benchmark_fails(tmp_path: Path) -> None:
    directory = parameters(tmp_path)
    with pytest.raises(RuntimeError), freed_pages_held(True, directory):
        raise RuntimeError("a side failed")
    assert values(directory) == {"min_free_ms": "0", "max_waiting_mib": "1024"}


def test_off_or_impossible_changes_nothing_and_says_why(tmp_path: Path) -> None:
    directory = parameters(tmp_path)
    with freed_pages_held(False, directory) as said:
        assert values(directory) == {"min_free_ms": "0", "max_waiting_mib": "1024"}
    assert said.startswith("not held (")
    (directory / "max_waiting_mib").unlink()  # a kernel without the second parameter
    with freed_pages_held(True, directory) as said:
        assert (directory / "min_free_ms").read_text().strip() == "0"  # put back at once
    assert said.startswith("not held: FileNotFoundError")
    with freed_pages_held(True, tmp_path / "absent") as said:
        pass
    assert said.startswith("not held: FileNotFoundError")


def test_a_value_the_kernel_refuses_puts_back_what_was_changed(tmp_path: Path) -> None:
    directory = parameters(tmp_path)
    (directory / "max_waiting_mib").unlink()
    (directory / "max_waiting_mib").mkdir()  # writing it fails (IsADirectoryError), as EINVAL
    with freed_pages_held(True, directory) as said:
        assert (directory / "min_free_ms").read_text().strip() == "0"
    assert said.startswith("not held: IsADirectoryError on ") and "max_waiting_mib" in said
