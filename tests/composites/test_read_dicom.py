"""ReadDicomFiles / ReadAllDicomFiles on a TestPipeline, with real and broken files."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import apache_beam as beam
import factory
import google.api_core.exceptions
import pytest
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import metrics, read_dicom
from transforms.read_dicom import ReadAllDicomFiles, ReadDicomFiles, expand_globstar
from transforms.spread import Spread


def test_valid_files_become_records_and_bad_ones_dead_letters(tmp_path: Path) -> None:
    good = factory.write_ct_instances(tmp_path / "in", count=3, studies=2)
    bad = factory.write_bad_inputs(tmp_path / "in")
    with TestPipeline() as p:
        result = p | ReadDicomFiles([str(tmp_path / "in" / "*")])
        assert_that(
            result.files | "GoodPaths" >> beam.Map(lambda f: (f.path, f.size)),
            equal_to([(str(g), factory.file_size(g)) for g in good]),
            label="GoodFiles",
        )
        assert_that(
            result.failed | "BadReasons" >> beam.Map(lambda d: (d.source, d.stage, d.reason)),
            equal_to([(str(b.path), "validate", b.reason) for b in bad]),
            label="BadFiles",
        )


def test_patterns_as_elements_and_double_star(tmp_path: Path) -> None:
    a = factory.write_ct_instances(tmp_path / "a" / "deep", count=2, seed="a")
    b = factory.write_ct_instances(tmp_path / "b", count=1, seed="b")
    with TestPipeline() as p:
        patterns = p | beam.Create([str(tmp_path / "a" / "**"), str(tmp_path / "b" / "*.dcm")])
        result = patterns | ReadAllDicomFiles()
        assert_that(
            result.files | beam.Map(lambda f: f.path),
            equal_to([str(x) for x in a + b]),
        )


def test_raw_dataset_gets_a_file_meta_prefix(tmp_path: Path) -> None:
    [raw] = factory.copy_files(["ExplVR_LitEndNoMeta.dcm"], tmp_path)
    with TestPipeline() as p:
        result = p | ReadDicomFiles([str(raw)])
        assert_that(
            result.files
            | beam.Map(lambda f: (f.file_meta_prefix[128:132], f.size - f.file_size > 132)),
            equal_to([(b"DICM", True)]),
        )


# --- store hardening: overlapping patterns, globstar, fuzzed and vanished inputs -------------


def test_a_path_matched_by_several_patterns_is_one_input(tmp_path: Path) -> None:
    paths = factory.write_ct_instances(tmp_path / "tree", count=2)
    with TestPipeline() as p:
        patterns = [str(tmp_path / "tree" / "*"), str(paths[0]), str(tmp_path / "tree" / "**")]
        result = p | ReadDicomFiles(patterns)
        assert_that(result.files | beam.Map(lambda f: f.path), equal_to([str(x) for x in paths]))
        assert_that(result.failed, equal_to([]), label="NoDeadLetters")


def test_globstar_also_matches_the_files_directly_in_the_directory(tmp_path: Path) -> None:
    top = factory.write_ct_instances(tmp_path / "dir", count=1, seed="top")
    deep = factory.write_ct_instances(tmp_path / "dir" / "sub", count=1, seed="deep")
    with TestPipeline() as p:
        result = p | ReadDicomFiles([str(tmp_path / "dir" / "**" / "*.dcm")])
        assert_that(
            result.files | beam.Map(lambda f: f.path), equal_to([str(x) for x in top + deep])
        )


def test_expand_globstar() -> None:
    assert expand_globstar("d/**/*.dcm") == ["d/**/*.dcm", "d/*.dcm"]
    assert sorted(expand_globstar("a/**/b/**/x")) == sorted(
        ["a/**/b/**/x", "a/b/**/x", "a/**/b/x", "a/b/x"]
    )
    assert expand_globstar("gs://b/**") == ["gs://b/**"]


def test_a_header_that_raises_lazily_is_a_dead_letter_and_its_neighbour_is_read(
    tmp_path: Path,
) -> None:
    good = factory.write_ct_instances(tmp_path, count=1)
    raw = bytearray(Path(factory.testdata("ExplVR_LitEndNoMeta.dcm")).read_bytes())
    at = raw.index(b"\x20\x00\x0d\x00UI") + 4  # StudyInstanceUID's VR, read lazily
    raw[at : at + 2] = b"\x55\xfd"
    (tmp_path / "fuzzed.dcm").write_bytes(bytes(raw))
    with TestPipeline() as p:
        result = p | ReadDicomFiles([str(tmp_path / "*.dcm")])
        assert_that(result.files | beam.Map(lambda f: f.path), equal_to([str(good[0])]))
        assert_that(
            result.failed | beam.Map(lambda d: (Path(d.source).name, d.reason)),
            equal_to([("fuzzed.dcm", "not_dicom")]),
            label="Fuzzed",
        )


class _VanishingFileSystem(LocalFileSystem):
    """``vanish://`` paths are local files whose objects disappear once listed, the way a
    gs:// object deleted between matching and reading raises google.api_core's NotFound."""

    @classmethod
    def scheme(cls) -> str:
        return "vanish"

    def _local(self, path: str) -> str:
        return path[len("vanish://") :]

    def match(self, patterns: list[str], limits: list[int] | None = None) -> list[MatchResult]:
        results = super().match([self._local(p) for p in patterns], limits)
        return [
            MatchResult(
                "vanish://" + r.pattern,
                [
                    FileMetadata("vanish://" + m.path, m.size_in_bytes, m.last_updated_in_seconds)
                    for m in r.metadata_list
                ],
            )
            for r in results
        ]

    def open(self, path: str, *args: object, **kwargs: object) -> BinaryIO:
        if path.endswith("gone.dcm"):
            raise google.api_core.exceptions.NotFound("No such object: bucket/gone.dcm")
        if path.endswith("boom.dcm"):
            raise RuntimeError("unexpected 'DOE^JOHN'")
        return super().open(self._local(path), *args, **kwargs)  # type: ignore[arg-type]


def test_an_object_that_vanished_or_an_internal_error_is_a_dead_letter(tmp_path: Path) -> None:
    (kept,) = factory.write_ct_instances(tmp_path, count=1)
    for name in ("gone.dcm", "boom.dcm"):
        (tmp_path / name).write_bytes(kept.read_bytes())
    with TestPipeline() as p:
        result = p | ReadDicomFiles([f"vanish://{tmp_path}/*.dcm"])
        assert_that(result.files | beam.Map(lambda f: f.path), equal_to([f"vanish://{kept}"]))
        assert_that(
            result.failed | beam.Map(lambda d: (Path(d.source).name, d.reason, d.message)),
            equal_to(
                [
                    ("gone.dcm", "unreadable", "cannot read the file (NotFound)"),
                    ("boom.dcm", "internal_error", "RuntimeError: unexpected …"),
                ]
            ),
            label="Failed",
        )


# --- store performance: files travel in chunks between matching and the peek -----------------


def test_files_in_several_chunks_are_each_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(read_dicom, "CHUNK_SIZE", 2)
    good = factory.write_ct_instances(tmp_path / "in", count=5, studies=2)
    (tmp_path / "in" / "junk.dcm").write_bytes(b"not dicom at all")
    p = TestPipeline()
    patterns = p | beam.Create([str(tmp_path / "in" / "*"), str(good[0]), str(tmp_path / "**")])
    result = patterns | ReadAllDicomFiles()
    assert_that(result.files | beam.Map(lambda f: f.path), equal_to([str(g) for g in good]))
    assert_that(
        result.failed | beam.Map(lambda d: (Path(d.source).name, d.reason)),
        equal_to([("junk.dcm", "not_dicom")]),
        label="Junk",
    )
    run = p.run()
    run.wait_until_finish()
    query = run.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    counts = {c.key.metric.name: c.committed for c in query["counters"]}
    assert counts[metrics.FILES_MATCHED] == 6
    assert counts[metrics.FILES_VALID] == 5


def test_spread_keeps_every_element() -> None:
    with TestPipeline() as p:
        values = [("a", 1), ("a", 1), ("b", 2), *((str(i), i) for i in range(50))]
        out = p | beam.Create(values) | Spread()
        assert_that(out, equal_to(values))
