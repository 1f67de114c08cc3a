"""ReadLines: the lines of a --uids_file or of an earlier manifest, in one step."""

from __future__ import annotations

import gzip
from pathlib import Path

from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.read_lines import ReadLines, read_lines


def test_every_matched_file_in_path_order_without_line_ends(tmp_path: Path) -> None:
    (tmp_path / "retrieved-00001-of-00002.jsonl").write_bytes(b"c\r\nd\n")
    (tmp_path / "retrieved-00000-of-00002.jsonl").write_bytes("a\n\u00e9t\u00e9".encode())
    (tmp_path / "other.jsonl").write_bytes(b"not matched\n")
    with gzip.open(tmp_path / "retrieved-extra.jsonl.gz", "wb") as f:
        f.write(b"zipped\n\nlast")  # decompressed by its extension; empty lines kept
    pattern = str(tmp_path / "retrieved-*")
    assert list(read_lines(pattern)) == ["a", "été", "c", "d", "zipped", "", "last"]
    assert list(read_lines(str(tmp_path / "nothing-*"))) == []


def test_as_a_transform(tmp_path: Path) -> None:
    (tmp_path / "uids.txt").write_text("1.2.3\n1.2.3/4.5\n")
    with TestPipeline() as p:
        lines = p | ReadLines(str(tmp_path / "uids.txt"))
        assert_that(lines, equal_to(["1.2.3", "1.2.3/4.5"]))
