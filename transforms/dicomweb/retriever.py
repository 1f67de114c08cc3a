"""Retrieve one unit (an instance, a series or a study) to files, and account for every file.

No Beam here. ``Retriever.retrieve(target)`` returns one outcome per file: a ``RetrievedFile``
(written now, or found complete by a re-run) or a ``DeadLetter``. A body is streamed to a spool
file and only moved to its final name once it is whole (and, with ``verify``, parses as DICOM and
holds the SOP Instance UID asked for), so an output file is never partial.

* Instances, one per request: ``application/dicom`` single part first; a server that refuses it
  (Orthanc answers 400) gets a multipart request of one part, and the client remembers which form
  works for the rest of the job.
* Series and studies: one multipart request whose parts are written as they arrive; each part's
  UIDs are read from its own DICOM header (servers do not name parts).
* A body cut mid-way is fetched again (within the retry bounds); parts already written are kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import requests

from transforms.dead_letter import DeadLetter, Reason, Stage
from transforms.dicomweb import http
from transforms.dicomweb.multipart_stream import (
    MultipartError,
    MultipartStream,
    PartHeaders,
    boundary_of,
    media_type,
)
from transforms.dicomweb.qido import iter_qido, page_end_rule
from transforms.dicomweb.wado import (
    RENDER_FORMATS,
    Answer,
    Stats,
    WadoConfig,
    bulk_file_suffix,
    bulkdata_uris,
    bulkdata_url,
    dicom_accepts,
    failure_reason,
    frame_batches,
    frames_url,
    metadata_accept,
    number_of_frames,
    octet_accepts,
    open_stream,
    rendered_url,
    try_next_accept,
)
from transforms.dicomweb.wado_files import (
    CutBody,
    Failed,
    ManifestEntry,
    check_expected,
    chunks,
    find_complete,
    verify_spool,
    write_answer,
    xml_uids,
)
from transforms.errors import HttpError, InvalidInputError
from transforms.output_files import OutputFiles, Spool
from transforms.records import (
    STATUS_RETRIEVED,
    InstanceUids,
    RetrievedFile,
)
from transforms.targets import Target

_CUT = (
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.Timeout,
)

Outcome = RetrievedFile | DeadLetter


@dataclass
class UnitReport:
    outcomes: list[Outcome] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)


def _uids(target: Target) -> InstanceUids:
    return InstanceUids(target.study, target.series or "", target.sop or "")


# (relative path, uids) for a part, or None to skip the part (already complete)
PartNamer = Callable[[int, PartHeaders, Spool], tuple[str, InstanceUids] | None]


class Retriever:
    """Retrieves units through one session; safe to share between threads."""

    def __init__(
        self,
        session: requests.Session,
        config: WadoConfig,
        files: OutputFiles,
        previous: Mapping[str, ManifestEntry] | None = None,
        clock: http.Clock | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._files = files
        self.previous: Mapping[str, ManifestEntry] = previous or {}  # an earlier manifest
        # SOP Instance UID -> size (and hash) the selection recorded, checked with ``verify``
        self.expected: Mapping[str, ManifestEntry] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._single_part_ok: bool | None = None  # learnt from the server's first answers

    # --- entry point ------------------------------------------------------------------------

    def retrieve(self, unit: Target) -> UnitReport:
        report = UnitReport()
        what = self._config.what
        try:
            if what == "instances":
                if unit.level == "instances":
                    report.outcomes.append(self._instance(unit, report.stats))
                else:
                    report.outcomes.extend(self._bulk_instances(unit, report.stats))
            elif what == "metadata" and self._config.metadata_format == "xml" and unit.sop is None:
                report.outcomes.extend(self._xml_documents(unit, report.stats))
            elif what == "metadata":
                report.outcomes.append(self._metadata(unit, report.stats))
            elif what == "rendered":
                report.outcomes.extend(self._rendered(unit, report.stats))
            elif what == "frames":
                report.outcomes.extend(self._frames(unit, report.stats))
            else:
                report.outcomes.extend(self._bulkdata(unit, report.stats))
        except Failed as exc:
            report.outcomes.append(self._letter(unit, exc))
        except HttpError as exc:
            report.outcomes.append(
                self._letter(
                    unit, Failed(exc.reason, exc.message, exc.status, exc.detail, exc.attempts)
                )
            )
        except OSError as exc:
            message = f"cannot write the output: {type(exc).__name__} ({exc.strerror or ''})"
            report.outcomes.append(self._letter(unit, Failed(Reason.WRITE_FAILED, message)))
        except Exception as exc:  # noqa: BLE001 - the exception boundary: never a failed bundle
            message = f"unexpected {type(exc).__name__} while retrieving"
            report.outcomes.append(self._letter(unit, Failed(Reason.BAD_RESPONSE, message)))
        return report

    def _letter(self, unit: Target, exc: Failed, suffix: str = "") -> DeadLetter:
        url = self._config.endpoint.resource_url(unit.study, unit.series, unit.sop)
        return DeadLetter(
            stage=Stage.RETRIEVE,
            source=self._config.endpoint.redacted(url) + suffix,
            reason=exc.reason,
            message=exc.message,
            uids=_uids(unit),
            http_status=exc.status,
            server_detail=exc.detail,
            attempts=exc.attempts,
        )

    # --- requests -----------------------------------------------------------------------------

    def _get(
        self,
        url: str,
        accepts: tuple[str, ...],
        stats: Stats,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Answer, int]:
        """The first successful answer over the Accept alternatives, and which one it was."""
        last: Answer | None = None
        attempts = 0
        for index, accept in enumerate(accepts):
            answer = open_stream(
                self._session,
                url,
                accept,
                policy=self._config.retry,
                max_server_errors=self._config.max_server_error_attempts,
                stats=stats,
                params=params,
                clock=self._clock,
            )
            attempts += answer.attempts
            if answer.response is not None:
                return Answer(
                    answer.status, answer.response, answer.content_type, None, attempts
                ), index
            last = answer
            if not try_next_accept(answer.status):
                break
        assert last is not None
        raise Failed(
            failure_reason(last.status),
            f"the server answered HTTP {last.status}",
            last.status,
            last.detail,
            attempts,
        )

    def _with_body_retries(self, fetch: Callable[[int], list[Outcome]]) -> list[Outcome]:
        """Runs ``fetch`` again when a body is cut mid-way, within the retry bounds."""
        tries = 0
        while True:
            tries += 1
            try:
                return fetch(tries)
            except (MultipartError, CutBody) as exc:
                reason = (
                    exc.reason if isinstance(exc, MultipartError) else Reason.TRUNCATED_RESPONSE
                )
                if reason != Reason.TRUNCATED_RESPONSE or tries >= self._config.retry.max_attempts:
                    raise Failed(reason, str(exc), 200, attempts=tries) from None

    def _commit(
        self, spool: Spool, relative: str, uids: InstanceUids, content_type: str, attempts: int
    ) -> RetrievedFile:
        path = self._files.commit(spool, relative)
        return RetrievedFile(
            path, uids, spool.size, content_type, spool.sha256, STATUS_RETRIEVED, attempts
        )

    # --- one file per request -------------------------------------------------------------------

    def _file(
        self,
        url: str,
        accepts: tuple[str, ...],
        relative: str,
        uids: InstanceUids,
        stats: Stats,
        *,
        dicom: bool = False,
        params: Mapping[str, str] | None = None,
        learn_single_part: bool = False,
    ) -> RetrievedFile:
        done = find_complete(self._files, self.previous, relative, uids, dicom)
        if done is not None:
            return done

        def fetch(tries: int) -> list[Outcome]:
            answer, index = self._get(url, accepts, stats, params)
            if learn_single_part:
                with self._lock:
                    self._single_part_ok = index == 0 and len(accepts) == 2
            spool = self._files.spool()
            try:
                try:
                    content_type = write_answer(answer, dicom, spool)
                except _CUT as exc:
                    raise CutBody(f"the answer was cut ({type(exc).__name__})") from None
                if dicom and self._config.verify:
                    verify_spool(spool, uids.sop or None)
                    check_expected(spool, self.expected.get(uids.sop))
                return [
                    self._commit(spool, relative, uids, content_type, answer.attempts + tries - 1)
                ]
            finally:
                spool.discard()

        outcome = self._with_body_retries(fetch)[0]
        assert isinstance(outcome, RetrievedFile)
        return outcome

    def _instance(self, unit: Target, stats: Stats) -> RetrievedFile:
        assert unit.series is not None and unit.sop is not None
        config = self._config
        with self._lock:
            single_first = self._single_part_ok is not False
        return self._file(
            config.endpoint.instance_url(unit.study, unit.series, unit.sop),
            dicom_accepts(config.transfer_syntax, single_part_first=single_first),
            config.layout.relative(unit.study, unit.series, unit.sop, ".dcm"),
            _uids(unit),
            stats,
            dicom=True,
            learn_single_part=single_first,
        )

    def _metadata(self, unit: Target, stats: Stats) -> RetrievedFile:
        config = self._config
        suffix = ".xml" if config.metadata_format == "xml" else ".json"
        if unit.sop is not None:
            assert unit.series is not None
            relative = config.layout.relative(unit.study, unit.series, unit.sop, suffix)
        elif unit.series is not None:
            relative = config.layout.series_document(unit.study, unit.series, suffix)
        else:
            relative = config.layout.study_document(unit.study, suffix)
        url = config.endpoint.resource_url(unit.study, unit.series, unit.sop) + "/metadata"
        return self._file(
            url, (metadata_accept(config.metadata_format),), relative, _uids(unit), stats
        )

    def _xml_documents(self, unit: Target, stats: Stats) -> list[Outcome]:
        """XML metadata of a series or study: one part, so one ``{instance}.xml``, per instance
        (PS3.19 XML has no array form), each named by the UIDs it holds."""
        config = self._config

        def name(index: int, headers: PartHeaders, spool: Spool) -> tuple[str, InstanceUids]:
            uids = xml_uids(spool)
            if uids.study != unit.study or (unit.series and uids.series != unit.series):
                raise Failed(Reason.BAD_RESPONSE, "a document belongs to another study or series")
            return config.layout.relative(uids.study, uids.series, uids.sop, ".xml"), uids

        url = config.endpoint.resource_url(unit.study, unit.series, None) + "/metadata"
        try:
            return self._parts(unit, url, (metadata_accept("xml"),), stats, name, False)
        except _PartlyDone as exc:
            return [*exc.written, self._letter(unit, exc.failure)]

    def _instance_metadata(self, unit: Target, stats: Stats) -> dict[str, object]:
        assert unit.series is not None and unit.sop is not None
        url = self._config.endpoint.instance_url(unit.study, unit.series, unit.sop) + "/metadata"
        answer, _ = self._get(url, (metadata_accept("json"),), stats)
        assert answer.response is not None
        try:
            document = json.loads(answer.response.content)
        except (ValueError, *_CUT):
            raise Failed(
                Reason.BAD_RESPONSE, "instance metadata is not JSON", answer.status
            ) from None
        finally:
            answer.response.close()
        if isinstance(document, list) and document and isinstance(document[0], dict):
            return document[0]
        raise Failed(Reason.BAD_RESPONSE, "instance metadata is not a DICOM JSON array")

    def _each(
        self, unit: Target, files: Iterator[tuple[str, Callable[[], RetrievedFile]]]
    ) -> list[Outcome]:
        """One outcome per file of a unit: a failure of one file does not stop the others."""
        outcomes: list[Outcome] = []
        for suffix, fetch in files:
            try:
                outcomes.append(fetch())
            except Failed as exc:
                outcomes.append(self._letter(unit, exc, suffix))
            except HttpError as exc:
                failed = Failed(exc.reason, exc.message, exc.status, exc.detail, exc.attempts)
                outcomes.append(self._letter(unit, failed, suffix))
        return outcomes

    def _rendered(self, unit: Target, stats: Stats) -> list[Outcome]:
        assert unit.series is not None and unit.sop is not None
        config = self._config
        media, ext = RENDER_FORMATS[config.render_format]
        instance_url = config.endpoint.instance_url(unit.study, unit.series, unit.sop)
        frames: tuple[int | None, ...]
        if config.render_frames is None:
            frames = (None,)
        elif config.render_frames:
            frames = config.render_frames
        else:
            frames = tuple(range(1, number_of_frames(self._instance_metadata(unit, stats)) + 1))
        # Written out, not passed as params: requests would send the comma as %2C, which
        # Orthanc does not decode (as with QIDO values).
        query = f"?viewport={config.viewport[0]},{config.viewport[1]}" if config.viewport else ""

        def one(frame: int | None) -> Callable[[], RetrievedFile]:
            suffix = ext if frame is None else f"_frame{frame}{ext}"
            relative = config.layout.relative(unit.study, unit.series or "", unit.sop or "", suffix)
            return lambda: self._file(
                rendered_url(instance_url, frame) + query,
                (media,),
                relative,
                _uids(unit),
                stats,
            )

        return self._each(
            unit, ((f"/frames/{f}/rendered" if f else "/rendered", one(f)) for f in frames)
        )

    def _bulkdata(self, unit: Target, stats: Stats) -> list[Outcome]:
        assert unit.series is not None and unit.sop is not None
        config = self._config
        instance_url = config.endpoint.instance_url(unit.study, unit.series, unit.sop)
        found = dict(bulkdata_uris(self._instance_metadata(unit, stats)))
        paths = config.bulkdata_paths or tuple(found)

        def one(path: str) -> Callable[[], RetrievedFile]:
            relative = config.layout.relative(
                unit.study, unit.series or "", unit.sop or "", bulk_file_suffix(path)
            )
            url = found.get(path) or bulkdata_url(instance_url, path)
            return lambda: self._file(url, octet_accepts(), relative, _uids(unit), stats)

        return self._each(unit, ((f"/bulkdata/{p}", one(p)) for p in paths))

    # --- many files per request -----------------------------------------------------------------

    def _parts(
        self,
        unit: Target,
        url: str,
        accepts: tuple[str, ...],
        stats: Stats,
        name: PartNamer,
        expect_dicom: bool,
    ) -> list[Outcome]:
        """Streams a multipart answer, one file per part; cut bodies are fetched again.

        A part that cannot be named or verified is a dead letter of its own; the others go on.
        """
        written: dict[str, Outcome] = {}

        def fetch(tries: int) -> list[Outcome]:
            answer, _ = self._get(url, accepts, stats)
            response = answer.response
            assert response is not None
            try:
                if not media_type(answer.content_type).startswith("multipart/"):
                    raise Failed(Reason.BAD_RESPONSE, "expected a multipart answer", answer.status)
                stream = MultipartStream(chunks(response), boundary_of(answer.content_type))
                for index, headers in enumerate(stream.parts()):
                    spool = self._files.spool()
                    try:
                        for chunk in stream.body():
                            spool.write(chunk)
                        if expect_dicom and media_type(headers.content_type) != "application/dicom":
                            raise MultipartError(Reason.BAD_MULTIPART, "a part is not DICOM")
                        try:
                            named = name(index, headers, spool)
                        except Failed as exc:
                            written[f"#part{index}"] = self._letter(unit, exc, f"#part{index + 1}")
                            continue
                        if named is not None and named[0] not in written:
                            relative, uids = named
                            written[relative] = self._commit(
                                spool, relative, uids, media_type(headers.content_type), tries
                            )
                    finally:
                        spool.discard()
            except _CUT as exc:
                raise CutBody(
                    f"the answer was cut ({type(exc).__name__}) after {len(written)} files"
                ) from None
            finally:
                response.close()
            return list(written.values())

        try:
            return self._with_body_retries(fetch)
        except Failed as exc:
            if not written:
                raise
            exc.message += f"; {len(written)} files were written before"
            raise _PartlyDone(list(written.values()), exc) from None

    def _bulk_instances(self, unit: Target, stats: Stats) -> list[Outcome]:
        """Every instance of a series or study from one streamed multipart answer."""
        config = self._config
        skipped = self._all_complete(unit, stats)
        if skipped is not None:
            return list(skipped)

        def name(index: int, headers: PartHeaders, spool: Spool) -> tuple[str, InstanceUids]:
            uids = verify_spool(spool, None)
            if config.verify:
                check_expected(spool, self.expected.get(uids.sop))
            if uids.study != unit.study or (unit.series and uids.series != unit.series):
                raise Failed(Reason.BAD_RESPONSE, "a part belongs to another study or series")
            return config.layout.relative(uids.study, uids.series, uids.sop, ".dcm"), uids

        url = config.endpoint.resource_url(unit.study, unit.series, None)
        accepts = dicom_accepts(config.transfer_syntax, single_part_first=False)
        try:
            return self._parts(unit, url, accepts, stats, name, expect_dicom=True)
        except _PartlyDone as exc:
            return [*exc.written, self._letter(unit, exc.failure)]

    def _all_complete(self, unit: Target, stats: Stats) -> list[Outcome] | None:
        """On a re-run, the series' or study's files when every one is complete already."""
        config = self._config
        # The deepest directory every file of the unit is below: where a re-run finds them.
        probe = config.layout.relative(unit.study, unit.series or "\0", "\0", "")
        known = probe.split("\0", 1)[0]
        directory = known.rsplit("/", 1)[0] if "/" in known else ""
        if not self._files.any_below(directory):
            return None
        try:
            return self._listed_complete(unit)
        except (HttpError, InvalidInputError):
            return None  # cannot tell: fetch the unit

    def _listed_complete(self, unit: Target) -> list[Outcome] | None:
        config = self._config
        url = config.endpoint.resource_url(unit.study, unit.series, None) + "/instances"
        found: list[Outcome] = []
        rows = iter_qido(
            self._session,
            url,
            policy=config.retry,
            page_end=page_end_rule(config.endpoint),
            clock=self._clock,
        )
        for row in rows:
            target = Target.from_dicom_json(row)
            if target.sop is None or target.series is None:
                return None
            uids = InstanceUids(target.study, target.series, target.sop)
            relative = config.layout.relative(target.study, target.series, target.sop, ".dcm")
            done = find_complete(self._files, self.previous, relative, uids, dicom=True)
            if done is None:
                return None
            found.append(done)
        return found or None

    def _frames(self, unit: Target, stats: Stats) -> list[Outcome]:
        assert unit.series is not None and unit.sop is not None
        config = self._config
        instance_url = config.endpoint.instance_url(unit.study, unit.series, unit.sop)
        frames = config.frames or tuple(
            range(1, number_of_frames(self._instance_metadata(unit, stats)) + 1)
        )
        outcomes: list[Outcome] = []
        for batch in frame_batches(frames):
            relatives = {
                f: config.layout.relative(unit.study, unit.series, unit.sop, f"_frame{f}.raw")
                for f in batch
            }
            todo = tuple(f for f in batch if self._resume_plain(relatives[f], unit, outcomes))
            if not todo:
                continue

            def name(
                index: int,
                headers: PartHeaders,
                spool: Spool,
                todo: tuple[int, ...] = todo,
                relatives: dict[int, str] = relatives,
            ) -> tuple[str, InstanceUids]:
                if index >= len(todo):
                    raise MultipartError(Reason.BAD_MULTIPART, "more frames than asked for")
                return relatives[todo[index]], _uids(unit)

            url = frames_url(instance_url, todo)
            suffix = f"/frames/{','.join(map(str, todo))}"
            try:
                got = self._parts(
                    unit, url, octet_accepts(config.transfer_syntax)[:1], stats, name, False
                )
            except Failed as exc:
                outcomes.append(self._letter(unit, exc, suffix))
                continue
            except _PartlyDone as exc:
                outcomes.extend(exc.written)
                outcomes.append(self._letter(unit, exc.failure, suffix))
                continue
            outcomes.extend(got)
            if len(got) < len(todo):
                missing = ",".join(str(f) for f in todo[len(got) :])
                outcomes.append(
                    self._letter(
                        unit,
                        Failed(
                            Reason.BAD_RESPONSE, f"frames {missing} missing from the answer", 200
                        ),
                        suffix,
                    )
                )
        return outcomes

    def _resume_plain(self, relative: str, unit: Target, outcomes: list[Outcome]) -> bool:
        """True when the file must be fetched; else its already-complete outcome is added."""
        done = find_complete(self._files, self.previous, relative, _uids(unit), dicom=False)
        if done is None:
            return True
        outcomes.append(done)
        return False


class _PartlyDone(Exception):
    def __init__(self, written: list[Outcome], failure: Failed) -> None:
        super().__init__(failure.message)
        self.written = written
        self.failure = failure
