"""WriteLines on a TestPipeline: every line once, shard names, no temporary files left."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline

from transforms.write_lines import WriteLineFiles, WriteLines


def test_every_line_once_in_named_shards_and_no_temporary_files(tmp_path: Path) -> None:
    lines = [f'{{"n": {i}}}' for i in range(500)]
    with TestPipeline() as p:
        _ = p | beam.Create(lines) | beam.Reshuffle() | WriteLines(str(tmp_path / "out"), "stored")
    shards = sorted((tmp_path / "out").glob("stored-*.jsonl"))
    assert shards, list((tmp_path / "out").iterdir())
    n = len(shards)
    assert [s.name for s in shards] == [f"stored-{i:05d}-of-{n:05d}.jsonl" for i in range(n)]
    written = [line for s in shards for line in s.read_text().splitlines()]
    assert sorted(written) == sorted(lines)
    assert [x.name for x in (tmp_path / "out").iterdir() if x.name.startswith(".")] == []


def test_an_empty_collection_writes_nothing(tmp_path: Path) -> None:
    with TestPipeline() as p:
        _ = p | beam.Create([]) | WriteLines(str(tmp_path / "out"), "dead_letter")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_line_files_write_each_name_in_its_shards_with_one_gathering(tmp_path: Path) -> None:
    stored = [{"n": i} for i in range(300)]
    failed = [{"bad": i} for i in range(7)]
    out = tmp_path / "out"
    with TestPipeline() as p:
        named = {
            "stored": p | "Stored" >> beam.Create(stored) | "S" >> beam.Reshuffle(),
            "dead_letter": p | "Failed" >> beam.Create(failed),
            "empty": p | "Empty" >> beam.Create([]),
        }
        _ = named | WriteLineFiles(str(out), to_line=lambda r: json.dumps(r, sort_keys=True))
    for name, records in (("stored", stored), ("dead_letter", failed)):
        shards = sorted(out.glob(f"{name}-*.jsonl"))
        n = len(shards)
        assert n and [s.name for s in shards] == [
            f"{name}-{i:05d}-of-{n:05d}.jsonl" for i in range(n)
        ]
        written = [json.loads(line) for s in shards for line in s.read_text().splitlines()]
        assert sorted(written, key=json.dumps) == sorted(records, key=json.dumps)
    assert not list(out.glob("empty-*"))
    assert [x.name for x in out.iterdir() if x.name.startswith(".")] == []


def _earlier_run(out: Path, name: str, shards: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}-{i:05d}-of-{shards:05d}.jsonl" for i in range(shards)]
    for path in paths:
        path.write_text('{"earlier": true}\n')
    return paths


def test_a_rerun_replaces_the_earlier_shards_of_each_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _earlier_run(out, "stored", 3)
    _earlier_run(out, "dead_letter", 1)  # this run has none: the earlier ones must go too
    # Not shards of ours: left alone.
    others = [out / "stored-notes.txt", out / "storedx-00000-of-00001.jsonl"]
    others += [out / "stored-00000-of-00003.jsonl.bak", out / "study" / "a.dcm"]
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    with TestPipeline() as p:
        named = {
            "stored": p | "Stored" >> beam.Create([{"n": 1}, {"n": 2}]),
            "dead_letter": p | "Failed" >> beam.Create([]),
        }
        _ = named | WriteLineFiles(str(out), to_line=lambda r: json.dumps(r, sort_keys=True))
    shards = sorted(out.glob("stored-*.jsonl"))
    assert [s.name for s in shards] == ["stored-00000-of-00001.jsonl"]
    assert sorted(shards[0].read_text().splitlines()) == ['{"n": 1}', '{"n": 2}']
    assert list(out.glob("dead_letter-*")) == []
    assert all(path.read_text() == "keep" for path in others)


def test_write_lines_replaces_earlier_shards_even_when_it_has_no_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _earlier_run(out, "plan", 2)
    _earlier_run(out, "deleted", 1)  # another name: not this transform's
    with TestPipeline() as p:
        _ = p | beam.Create([]) | WriteLines(str(out), "plan")
    assert list(out.glob("plan-*")) == []
    assert [p.name for p in out.glob("deleted-*")] == ["deleted-00000-of-00001.jsonl"]


def test_a_name_with_a_suffix_and_a_header(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _earlier_run(out, "results", 1)  # .jsonl of the same stem: this run's, replaced below
    earlier_csv = out / "results-00001-of-00002.csv"
    earlier_csv.write_text("old\n")
    with TestPipeline() as p:
        named = {
            "results": p | "Json" >> beam.Create(['{"a": 1}']),
            "results.csv": p | "Csv" >> beam.Create(["1,x", "2,y"]),
        }
        _ = named | WriteLineFiles(str(out), headers={"results.csv": "id,name"})
    (csv_shard,) = out.glob("results-*.csv")
    assert csv_shard.name == "results-00000-of-00001.csv"
    lines = csv_shard.read_text().splitlines()
    assert lines[0] == "id,name" and sorted(lines[1:]) == ["1,x", "2,y"]
    (json_shard,) = out.glob("results-*.jsonl")
    assert json_shard.read_text() == '{"a": 1}\n'  # no header where none was given
