"""Files written atomically below an output prefix (local or gs://), and checks for resuming.

A file is first written to a spool file (beside the outputs for a local prefix, so the final step
is one ``os.replace``; in the local temp directory for a remote prefix, then copied to a temporary
object and renamed through Beam's FileSystems). A reader of the output therefore sees either no
file or a complete one, never a partial one, even when a worker is killed mid-write.

Beam is imported only for remote prefixes, so the retrieve client stays usable without it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO

SPOOL_DIR = ".retrieve-tmp"
COPY_BLOCK = 1 << 20
# Spool names: unique per process (its id and a random token) and per file (a counter), without
# a uuid4 (an entropy read) per file.
_SPOOL_TOKEN = uuid.uuid4().hex[:12]
_spool_numbers = itertools.count()


def _filesystems() -> Any:
    from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415 - remote prefixes only

    return FileSystems


def join(prefix: str, relative: str) -> str:
    return f"{prefix.rstrip('/')}/{relative}"


class Spool:
    """A file being written: counts its bytes and hashes them on the way.

    Past ``BACKGROUND_AFTER`` bytes (a large instance of a series), writing and hashing move to
    a thread of the spool's own, fed through a short queue: the disk and sha256 (both release
    the GIL) then run beside the network reads instead of between them. Memory stays bounded
    by the queue (``QUEUED_PIECES`` pieces of at most a chunk). An error of that thread is
    raised by the next ``write`` or by ``close``.
    """

    BACKGROUND_AFTER = 4 << 20
    QUEUED_PIECES = 4

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._hash = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | memoryview | None] | None = None
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self.moved = False  # committed: nothing left to remove at ``path``

    def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self.size += len(data)
        if self._queue is None and self.size > self.BACKGROUND_AFTER:
            self._queue = queue.Queue(self.QUEUED_PIECES)
            self._writer = threading.Thread(target=self._drain, name="spool", daemon=True)
            self._writer.start()
        if self._queue is None:
            self._put(data)
            return
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def _put(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)

    def _drain(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            if self._error is None:  # after an error, only empty the queue
                try:
                    self._put(data)
                except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                    self._error = exc

    def _finish(self) -> None:
        if self._writer is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._writer.join()
            self._writer = self._queue = None
            if self._error is not None:
                raise self._error

    @property
    def sha256(self) -> str:
        self._finish()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._finish()
            finally:
                self._file.close()
                self._file = None

    def discard(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the file is going anyway; the writer saw the error
            pass
        if self.moved:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class OutputFiles:
    """The output prefix of a retrieve.

    Args:
      prefix: a local directory or a URL Beam's FileSystems knows (``gs://bucket/dir``).
    """

    prefix: str
    # Local directories known to exist: one makedirs per directory, not per file. Shared by the
    # threads of a worker; a set's add and lookup are atomic, and a race costs one extra call.
    _made: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @property
    def is_local(self) -> bool:
        return "://" not in self.prefix

    def path(self, relative: str) -> str:
        return join(self.prefix, relative)

    def spool(self) -> Spool:
        if self.is_local:
            directory = os.path.join(self.prefix, SPOOL_DIR)
            self._makedirs(directory)
        else:
            directory = tempfile.gettempdir()
        path = os.path.join(directory, f"part-{os.getpid()}-{_SPOOL_TOKEN}-{next(_spool_numbers)}")
        try:
            return Spool(path)
        except FileNotFoundError:  # another worker of this output removed it when it finished
            os.makedirs(directory, exist_ok=True)
            return Spool(path)

    def _makedirs(self, directory: str) -> None:
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)

    def cleanup(self) -> None:
        """Remove the local spool directory if nothing is left in it (a finished run)."""
        if self.is_local:
            spool_dir = os.path.join(self.prefix, SPOOL_DIR)
            self._made.discard(spool_dir)
            try:
                os.rmdir(spool_dir)
            except OSError:
                pass  # absent, or still used by another worker of this output

    def commit(self, spool: Spool, relative: str) -> str:
        """Move a complete spool file to its final name (atomic for the reader); its path."""
        spool.close()
        final = self.path(relative)
        if self.is_local:
            directory = os.path.dirname(final) or "."
            self._makedirs(directory)
            try:
                os.replace(spool.path, final)
            except FileNotFoundError:  # the directory was removed since it was made
                os.makedirs(directory, exist_ok=True)
                os.replace(spool.path, final)
            spool.moved = True
            return final
        fs = _filesystems()
        temporary = f"{final}.part-{uuid.uuid4().hex[:12]}"
        try:
            with open(spool.path, "rb") as source, fs.create(temporary) as sink:
                while block := source.read(COPY_BLOCK):
                    sink.write(block)
            fs.rename([temporary], [final])
        finally:
            spool.discard()
        return final

    def size(self, relative: str) -> int | None:
        """The size of an existing output file, None when there is none."""
        path = self.path(relative)
        if self.is_local:
            try:
                return os.stat(path).st_size
            except (FileNotFoundError, NotADirectoryError):
                return None
        fs = _filesystems()
        try:
            found = fs.match([path])[0].metadata_list
        except Exception:  # noqa: BLE001 - Beam raises its own BeamIOError for a missing file
            return None
        return int(found[0].size_in_bytes) if found else None

    def open(self, relative: str) -> BinaryIO:
        path = self.path(relative)
        if self.is_local:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        from apache_beam.io.filesystem import CompressionTypes  # noqa: PLC0415

        return _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self.open(relative) as f:
            while block := f.read(COPY_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def any_below(self, relative_dir: str) -> bool:
        """Whether anything was written below a directory already (a run to resume)."""
        path = self.path(relative_dir)
        if self.is_local:
            try:
                return any(True for _ in os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                return False
        try:
            return bool(_filesystems().match([path.rstrip("/") + "/*"])[0].metadata_list)
        except Exception:  # noqa: BLE001
            return False
