"""The quickstart: every job once, on pydicom's bundled sample files, against a local Orthanc.

    python -m pipelines.demo [--output DIR]

Starts an Orthanc + DICOMweb plugin on a free loopback port with a temporary store, then:

1. ``pipelines.store`` on the sample folder (real images in many transfer syntaxes, mixed with
   files that are not DICOM, truncated, lack UIDs or repeat another file's UIDs, so the dead
   letters show their reasons), twice, to show that nothing is stored twice;
2. ``pipelines.search``: the CT series;
3. ``pipelines.retrieve``: those series' instances, byte for byte, as files;
4. ``pipelines.delete``: the MR studies, through Orthanc's REST API (``--delete_api orthanc``),
   after writing the plan;

and stops Orthanc. Each step prints the command line it runs and its summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pydicom.data

from pipelines import delete, retrieve, search, store
from pipelines.local_orthanc import LocalOrthanc


def sample_folder() -> Path:
    return Path(str(pydicom.data.get_testdata_file("CT_small.dcm", download=False))).parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="where results go (a new temp dir by default)")
    args = parser.parse_args(argv)
    output = Path(args.output or tempfile.mkdtemp(prefix="dicomweb-beam-demo-"))
    samples = sample_folder()
    with LocalOrthanc() as orthanc:
        print(f"Orthanc with DICOMweb at {orthanc.dicomweb_url}", flush=True)
        codes = []
        for run_name in ("first-run", "second-run"):
            print(f"\n== {run_name}: python -m pipelines.store --input {samples}/* ...", flush=True)
            code = store.main(
                [
                    "--input", f"{samples}/*",
                    "--dicomweb_url", orthanc.dicomweb_url,
                    "--output", str(output / run_name),
                ]
            )  # fmt: skip
            codes.append(code)
            _show_dead_letter_examples(output / run_name)
        print(f"\nOrthanc now holds {orthanc.instance_count()} instances.")
        url = ["--dicomweb_url", orthanc.dicomweb_url]
        steps = [
            (search, ["--level", "series", "--filter", "Modality=CT", "--output", "search"]),
            (retrieve, ["--level", "series", "--filter", "Modality=CT", "--output", "retrieve"]),
            (delete, ["--level", "studies", "--filter", "ModalitiesInStudy=MR",
                      "--delete_api", "orthanc", "--yes", "--output", "delete"]),
        ]  # fmt: skip
        for job, job_args in steps:
            at = job_args.index("--output") + 1
            job_args[at] = str(output / job_args[at])
            name = job.__name__
            print(
                f"\n== {name}: python -m {name} {' '.join(job_args)} --dicomweb_url ...", flush=True
            )
            codes.append(job.main([*job_args, *url]))
        print(f"\nOrthanc now holds {orthanc.instance_count()} instances.")
    print(f"Results, files and dead letters are under {output}")
    ok = all(code in (store.EXIT_OK, store.EXIT_DEAD_LETTERS) for code in codes)
    return 0 if ok else 1


def _show_dead_letter_examples(run_dir: Path) -> None:
    examples: dict[str, dict[str, object]] = {}
    counts: Counter[str] = Counter()
    for path in sorted(run_dir.glob("dead_letter-*.jsonl")):
        for line in path.read_text().splitlines():
            letter = json.loads(line)
            counts[letter["reason"]] += 1
            examples.setdefault(letter["reason"], letter)
    if not examples:
        return
    print("  one dead letter per reason (the sample folder holds such files on purpose):")
    for reason, letter in sorted(examples.items()):
        print(f"    {reason:<18} {Path(str(letter['source'])).name}: {letter['message']}")


if __name__ == "__main__":
    sys.exit(main())
