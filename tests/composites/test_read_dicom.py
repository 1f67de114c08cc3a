"""ReadDicomFiles / ReadAllDicomFiles on a TestPipeline, with real and broken files."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import factory
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.read_dicom import ReadAllDicomFiles, ReadDicomFiles


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
