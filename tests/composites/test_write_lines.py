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
