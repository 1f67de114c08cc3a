"""What a job prints when its runner reports no metrics (a Dataflow ``--dry_run=True`` build, or a
runner without metrics support): it says so, and counts what the output files hold instead of
printing zeros. The exit code follows the dead-letter files: 3 when some hold lines, else 0.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

EXIT_OK = 0
EXIT_DEAD_LETTERS = 3

_SHARD = re.compile(r"^(?P<name>.+?)-\d{5}-of-\d{5}\.jsonl$")


def option_value(argv: Sequence[str], name: str) -> str | None:
    """The last value of ``--name value`` or ``--name=value`` in argv (None when absent)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def output_line_counts(prefix: str) -> dict[str, int]:
    """Lines per result file family (``stored``, ``dead_letter``...) under an output prefix."""
    counts: dict[str, int] = {}
    for match in FileSystems.match([f"{prefix.rstrip('/')}/*.jsonl"])[0].metadata_list:
        shard = _SHARD.match(match.path.rsplit("/", 1)[-1])
        if not shard:
            continue
        with FileSystems.open(match.path) as f:
            lines = sum(1 for line in f if line.strip())
        counts[shard.group("name")] = counts.get(shard.group("name"), 0) + lines
    return dict(sorted(counts.items()))


def report_without_metrics(job: str, argv: Sequence[str] | None) -> int:
    """Print the summary of a run whose runner reported no metrics; the job's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    dry_run = any(a == "--dry_run" or a.lower() == "--dry_run=true" for a in args)
    output = option_value(args, "--output")
    if dry_run:
        print(
            f"{job}: --dry_run: the job was built and not submitted; nothing ran, so there are "
            "no counts",
            flush=True,
        )
        return EXIT_OK
    lines = [f"{job} finished; the runner reports no metrics, so no counts from the pipeline"]
    counts = output_line_counts(output) if output else {}
    if counts:
        lines.append("  from the output files:")
        lines += [f"    {name:<22}{n:>8,} lines" for name, n in counts.items()]
    else:
        lines.append("  no output files to count" + (f" under {output}" if output else ""))
    print("\n".join(lines), flush=True)
    dead = sum(n for name, n in counts.items() if name.startswith("dead_letter"))
    return EXIT_DEAD_LETTERS if dead else EXIT_OK
