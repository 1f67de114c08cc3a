"""Open an input for reading: local paths directly, anything else through Beam's FileSystems."""

from __future__ import annotations

from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def open_source(path: str) -> BinaryIO:
    if "://" not in path:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    # Never let Beam guess a compression from the extension: bytes are sent as they are.
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
