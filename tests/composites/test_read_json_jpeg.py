"""ReadJsonJpegPairs on a TestPipeline: pairing rules, template + CSV, validation, unique UIDs."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import jpeg_factory as jf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.dicom.build import BuildOptions
from transforms.read_json_jpeg import ReadJsonJpegPairs, jpeg_candidates


def _source_reason(d: object) -> tuple[str, str]:
    return d.source, d.reason  # type: ignore[attr-defined]


def test_good_pairs_pass_and_each_bad_pair_gets_its_reason(tmp_path: Path) -> None:
    good = jf.write_good_pairs(tmp_path / "in", 2)
    bad = jf.write_bad_pairs(tmp_path / "in")
    with TestPipeline(runner="FnApiRunner") as p:
        result = p | ReadJsonJpegPairs([str(tmp_path / "in" / "*.json")])
        assert_that(
            result.pairs | beam.Map(lambda r: (r.source, r.jpeg_path)),
            equal_to([(str(g), str(g.with_suffix(".jpg"))) for g in good]),
            label="Pairs",
        )
        assert_that(
            result.failed | beam.Map(_source_reason),
            equal_to([(str(b.source), b.reason) for b in bad]),
            label="DeadLetters",
        )


def test_bulk_data_uri_beats_the_stem_and_the_guide_name_gets_jpg(tmp_path: Path) -> None:
    d = tmp_path / "in"
    jf.write_pair(d, "guide", jf.metadata("guide", pixel_uri="jpeg-image"), None)
    (d / "jpeg-image.jpg").write_bytes(jf.jpeg_bytes(seed=1))
    jf.write_pair(d, "pointed", jf.metadata("pointed", pixel_uri="sub/photo.jpeg"), None)
    (d / "sub").mkdir()
    (d / "sub" / "photo.jpeg").write_bytes(jf.jpeg_bytes(seed=2))
    (d / "pointed.jpg").write_bytes(jf.jpeg_bytes(seed=3))  # same stem, but the URI wins
    jf.write_pair(d, "array", json.dumps([jf.metadata("array")]), jf.jpeg_bytes(seed=4))
    (d / "array.json").write_bytes(b"\xef\xbb\xbf" + (d / "array.json").read_bytes())  # a BOM
    with TestPipeline(runner="FnApiRunner") as p:
        # Overlapping patterns match files twice: each pair still counts once.
        result = p | ReadJsonJpegPairs([str(d / "*.json"), str(d / "**")])
        assert_that(
            result.pairs | beam.Map(lambda r: (Path(r.source).name, r.jpeg_path)),
            equal_to(
                [
                    ("guide.json", str(d / "jpeg-image.jpg")),
                    ("pointed.json", str(d / "sub" / "photo.jpeg")),
                    ("array.json", str(d / "array.jpg")),
                ]
            ),
        )
    assert jpeg_candidates("/a/b.json", "../c/x.jpg")[0] == "/c/x.jpg"


def test_duplicate_sop_uids_keep_the_first_source(tmp_path: Path) -> None:
    d = tmp_path / "in"
    sop = jf.uid("same-sop")
    jf.write_pair(d, "a", jf.metadata("a", sop=sop), jf.jpeg_bytes(seed=1))
    jf.write_pair(d, "b", jf.metadata("b", sop=sop), jf.jpeg_bytes(seed=2))
    with TestPipeline(runner="FnApiRunner") as p:
        result = p | ReadJsonJpegPairs([str(d / "*.json")])
        assert_that(result.pairs | beam.Map(lambda r: r.source), equal_to([str(d / "a.json")]))
        assert_that(
            result.failed | beam.Map(_source_reason),
            equal_to([(str(d / "b.json"), "duplicate_input")]),
            label="Duplicate",
        )


def test_template_and_csv_fill_each_image_and_account_for_strays(tmp_path: Path) -> None:
    d = tmp_path / "photos"
    for name in ("one", "two", "nometa"):
        (d / f"{name}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.jpg").write_bytes(jf.jpeg_bytes(seed=len(name)))
    (d / "twin").mkdir()
    (d / "twin" / "one.jpg").write_bytes(jf.jpeg_bytes(seed=9))  # same base name elsewhere
    template = jf.metadata("t", uids=False)
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(
        "file,PatientID,InstanceNumber,SeriesDescription\n"
        "two.jpg,P-2,2,Two\n"
        "one.jpg,P-1,1,\n"
        "ghost.jpg,P-9,9,Ghost\n"
    )
    options = BuildOptions(generate_uids=True, uid_root="1.2.3")
    with TestPipeline(runner="FnApiRunner") as p:
        result = p | ReadJsonJpegPairs(
            [str(d / "**")], options=options, template=template, metadata_csv=str(csv_path)
        )
        assert_that(
            result.pairs
            | beam.Map(
                lambda r: (
                    Path(r.source).name,
                    json.loads(r.metadata_json)["00100020"]["Value"][0],
                    len(r.generated_uids),
                )
            ),
            equal_to([("two.jpg", "P-2", 3)]),
            label="Filled",
        )
        twins = "ambiguous metadata: 2 input images are named 'one.jpg'"
        ghost = "line 4 of the metadata CSV names 'ghost.jpg', which no input image is"
        assert_that(
            result.failed | beam.Map(lambda x: (Path(x.source).name, x.reason, x.message)),
            equal_to(
                [
                    ("one.jpg", "duplicate_input", twins),
                    ("one.jpg", "duplicate_input", twins),
                    ("nometa.jpg", "missing_metadata", "no row of the metadata CSV for nometa.jpg"),
                    ("meta.csv", "missing_jpeg", ghost),
                ]
            ),
            label="Strays",
        )
