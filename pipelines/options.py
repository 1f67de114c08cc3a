"""Command-line options of the jobs, and their translation into transform configuration.

Option ``dest`` names are also the Flex Template parameter names. Secrets are never options:
``--token_env`` and ``--password_env`` name environment variables that hold them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from transforms.dicomweb import http
from transforms.dicomweb.auth import AUTH_KINDS, AuthConfig
from transforms.dicomweb.endpoint import DicomwebEndpoint
from transforms.dicomweb.stow import ON_EXISTS_CHOICES, STORAGE_CLASSES, StowConfig
from transforms.stow import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_CONCURRENCY


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


class DicomwebOptions(PipelineOptions):
    """Where the store is and how to authenticate (shared by every job)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("DICOMweb store")
        g.add_argument("--dicomweb_url", help="DICOMweb base URL, e.g. http://host:8042/dicom-web")
        # --project is Beam's own option (GoogleCloudOptions); a Google store reuses it.
        g.add_argument("--location", dest="store_location", help="Google store: location")
        g.add_argument("--dataset", dest="store_dataset", help="Google store: dataset")
        g.add_argument("--dicom_store", help="Google store: DICOM store")
        g.add_argument(
            "--auth",
            choices=AUTH_KINDS,
            help="google (Application Default Credentials; the default for Google stores), "
            "bearer, basic or none (the default for other URLs)",
        )
        g.add_argument("--token_env", help="bearer: environment variable holding the token")
        g.add_argument("--token_file", help="bearer: file holding the token")
        g.add_argument("--username", help="basic: user name")
        g.add_argument("--password_env", help="basic: environment variable holding the password")
        g.add_argument(
            "--max_attempts",
            type=positive_int,
            default=6,
            help="requests made at most for one request, the first included (408, 429, 5xx "
            "and connection errors are retried with backoff; other 4xx never)",
        )
        g.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            help="seconds one attempt waits for the server to answer",
        )
        g.add_argument(
            "--request_deadline",
            type=float,
            default=900.0,
            help="seconds one request may take in all, retries, waits and the attempt in "
            "progress included",
        )
        g.add_argument(
            "--no_preflight",
            action="store_true",
            help="do not check the store answers before starting the job (the input globs "
            "and the output are checked anyway)",
        )


class StoreOptions(PipelineOptions):
    """Options of pipelines.store."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("store")
        g.add_argument(
            "--input",
            action="append",
            help="glob of DICOM files, local or gs:// (repeatable; a directory means all below)",
        )
        add_shared_option(
            g,
            "--output",
            help="prefix (local or gs://) for stored-*.jsonl and dead_letter-*.jsonl; refused "
            "if it holds results of another run, unless --overwrite",
        )
        g.add_argument(
            "--overwrite",
            action="store_true",
            help="delete the results of an earlier run found under --output before starting",
        )
        g.add_argument(
            "--storage_class",
            choices=STORAGE_CLASSES,
            help="Google stores: the Storage-Class header of every STOW request",
        )
        g.add_argument(
            "--batch_size",
            type=positive_int,
            default=DEFAULT_BATCH_SIZE,
            help="instances of one study per STOW request at most",
        )
        g.add_argument(
            "--max_batch_bytes",
            type=positive_int,
            default=DEFAULT_MAX_BATCH_BYTES,
            help="bytes per STOW request at most (a larger instance is sent alone)",
        )
        add_shared_option(
            g,
            "--max_concurrency",
            type=positive_int,
            default=DEFAULT_MAX_CONCURRENCY,
            help="requests in flight per worker process",
        )
        g.add_argument(
            "--single_part",
            action="store_true",
            help="one application/dicom POST per instance (Google's form) instead of multipart",
        )
        g.add_argument(
            "--on_exists",
            choices=ON_EXISTS_CHOICES,
            default="skip",
            help="an instance the store already holds: skip (reported already_present) or "
            "fail (a dead letter already_exists)",
        )
        g.add_argument(
            "--no_check_existing",
            action="store_true",
            help="do not ask the store which instances of each study it has before sending "
            "(one search per study)",
        )


@dataclass(frozen=True)
class StoreSettings:
    """Validated settings of a store run."""

    inputs: tuple[str, ...]
    output: str
    config: StowConfig
    auth: AuthConfig
    batch_size: int
    max_batch_bytes: int
    max_concurrency: int
    preflight: bool
    overwrite: bool = False  # store hardening


def endpoint_from(options: PipelineOptions) -> DicomwebEndpoint:
    opts = options.view_as(DicomwebOptions)
    project = options.view_as(GoogleCloudOptions).project
    google = (project, opts.store_location, opts.store_dataset, opts.dicom_store)
    if opts.dicomweb_url and any(google[1:]):
        raise ValueError(
            "give either --dicomweb_url or --project/--location/--dataset/--dicom_store"
        )
    if opts.dicomweb_url:
        return DicomwebEndpoint(opts.dicomweb_url)
    if all(google):
        return DicomwebEndpoint.for_google_store(*google)
    if any(google[1:]):
        raise ValueError(
            "a Google store needs all of --project, --location, --dataset, --dicom_store"
        )
    raise ValueError("--dicomweb_url (or --project/--location/--dataset/--dicom_store) is required")


def auth_from(opts: DicomwebOptions, endpoint: DicomwebEndpoint) -> AuthConfig:
    kind = opts.auth or ("google" if endpoint.is_google else "none")
    return AuthConfig(
        kind=kind,
        token_env=opts.token_env,
        token_file=opts.token_file,
        username=opts.username,
        password_env=opts.password_env,
    )


def retry_from(opts: DicomwebOptions) -> http.RetryPolicy:
    if opts.timeout <= 0 or opts.request_deadline <= 0:
        raise ValueError("--timeout and --request_deadline must be positive")
    return http.RetryPolicy(
        max_attempts=opts.max_attempts,
        timeout=(min(10.0, opts.timeout), opts.timeout),
        max_elapsed=opts.request_deadline,
    )


def store_settings(options: PipelineOptions) -> StoreSettings:
    """Validate the options of a store run; raises ValueError with a message for the user."""
    web = options.view_as(DicomwebOptions)
    store = options.view_as(StoreOptions)
    if not store.input:
        raise ValueError("--input is required (a glob of DICOM files; repeatable)")
    if not store.output:
        raise ValueError("--output is required (a prefix for result and dead-letter files)")
    endpoint = endpoint_from(options)
    config = StowConfig(
        endpoint=endpoint,
        single_part=store.single_part,
        storage_class=store.storage_class,
        on_exists=store.on_exists,
        check_existing=not store.no_check_existing,
        retry=retry_from(web),
    )
    return StoreSettings(
        inputs=tuple(_expand_directory(p) for p in store.input),
        output=store.output.rstrip("/"),
        config=config,
        auth=auth_from(web, endpoint),
        batch_size=store.batch_size,
        max_batch_bytes=store.max_batch_bytes,
        max_concurrency=store.max_concurrency,
        preflight=not web.no_preflight,
        overwrite=store.overwrite,
    )


def _expand_directory(pattern: str) -> str:
    """A local directory means every file below it."""
    if "://" not in pattern and os.path.isdir(pattern):
        return os.path.join(pattern, "**")
    return pattern


# --- search (QIDO-RS) -------------------------------------------------------------------------


def add_shared_option(group: Any, *names: str, **kwargs: Any) -> None:
    """Declare an option several jobs share (``--output``, ``--max_concurrency``) unless an
    option class already did.

    Beam parses every ``PipelineOptions`` subclass ever imported in one parser, so two jobs'
    classes declaring ``--output`` collide (argparse: "conflicting option string") as soon as
    both modules are loaded, e.g. in tests. Declarations must agree on ``dest``, type and default.
    """
    known = group._option_string_actions  # noqa: SLF001 - shared by a parser and its groups
    if any(name in known for name in names):
        return
    group.add_argument(*names, **kwargs)


# delete family (pipelines/delete.py) ----------------------------------------------------------
class DeleteOptions(PipelineOptions):
    """Options of pipelines.delete."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        from transforms.delete import DEFAULT_MAX_CONCURRENCY as MAX_REQUESTS
        from transforms.delete import DEFAULT_MAX_OPERATIONS
        from transforms.dicomweb.delete import DEFAULT_OPERATION_TIMEOUT, DELETE_APIS

        g = parser.add_argument_group("delete")

        def add(*flags: str, **kwargs: object) -> None:
            # --output and --max_concurrency are other jobs' too (see add_shared_option).
            add_shared_option(g, *flags, **kwargs)

        add(
            "--uids_file",
            help="targets, one a line: study, study/series, study/series/instance, or the "
            "results-*.jsonl of pipelines.search (local or gs://)",
        )
        add(
            "--all",
            dest="delete_all",
            action="store_true",
            help="select every study of the store (refused without it when nothing is selected)",
        )
        add("--output", help="prefix for plan-, deleted- and dead_letter-*.jsonl")
        add(
            "--plan_only",
            action="store_true",
            help="write OUTPUT/plan-*.jsonl (targets and instance counts) and delete nothing",
        )
        add("--yes", action="store_true", help="really delete (required unless --plan_only)")
        add(
            "--max_targets",
            type=positive_int,
            default=1000,
            help="refuse to start (exit 2, nothing deleted) past this many targets to delete",
        )
        add(
            "--verify",
            action="store_true",
            help="search for each deleted target afterwards; one still there is a dead letter",
        )
        add(
            "--delete_api",
            choices=DELETE_APIS,
            default="dicomweb",
            help="dicomweb: DELETE on the DICOMweb paths (Google); orthanc: Orthanc's REST API "
            "(POST /tools/lookup, then DELETE /studies|series|instances/{id})",
        )
        add(
            "--orthanc_url",
            help="with --delete_api orthanc: Orthanc's REST root (default: the DICOMweb URL "
            "minus its last path segment)",
        )
        add(
            "--operation_timeout",
            type=float,
            default=DEFAULT_OPERATION_TIMEOUT,
            help="seconds a long-running delete operation may take before it is dead-lettered",
        )
        add(
            "--max_concurrency",
            type=positive_int,
            default=MAX_REQUESTS,
            help="plain requests (instance deletes, searches) in flight per worker process",
        )
        add(
            "--max_operations",
            type=positive_int,
            default=DEFAULT_MAX_OPERATIONS,
            help="study/series deletes (long-running operations) in flight per worker process",
        )


# --- retrieve (WADO-RS) family ---
class RetrieveOptions(PipelineOptions):
    """Options of pipelines.retrieve (the selection options come with them)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        from transforms.dicomweb import wado  # noqa: PLC0415 - keeps this block self-contained

        g = parser.add_argument_group("retrieve")
        add_shared_option(
            g,
            "--uids_file",
            help="file (local or gs://) of targets, one a line: study, study/series, "
            "study/series/instance, or a JSON line of pipelines.search's results",
        )
        add_shared_option(
            g,
            "--output",
            help="prefix for the files, retrieved-*.jsonl and dead_letter-*.jsonl",
        )
        g.add_argument("--what", choices=wado.WHATS, default="instances")
        g.add_argument(
            "--granularity",
            choices=wado.GRANULARITIES,
            default="instance",
            help="one request per instance, or one streamed multipart request per series or "
            "study (instances, metadata)",
        )
        g.add_argument(
            "--transfer_syntax",
            default="*",
            help="'*' keeps the stored bytes; a UID asks the server to transcode",
        )
        g.add_argument("--render_format", choices=tuple(wado.RENDER_FORMATS), default="png")
        g.add_argument(
            "--render_frames", help="rendered: frames to render (1,2 or all) instead of the image"
        )
        g.add_argument("--viewport", help="rendered: W,H")
        g.add_argument("--metadata_format", choices=wado.METADATA_FORMATS, default="json")
        g.add_argument("--frames", default="all", help="frames: 1,3,5 or all")
        g.add_argument(
            "--bulkdata_path",
            action="append",
            help="bulkdata: 7FE00010 or SQTAG/i/TAG (item i 0-based; repeatable); "
            "default: every BulkDataURI of the metadata",
        )
        g.add_argument(
            "--layout",
            default=wado.DEFAULT_LAYOUT,
            help="file names below --output; {study}, {series}, {instance}",
        )
        add_shared_option(
            g,
            "--verify",
            action="store_true",
            help="instances: check each file parses and holds the SOP Instance UID asked for",
        )
        add_shared_option(
            g,
            "--max_concurrency",
            type=positive_int,
            default=8,
            help="requests in flight per worker process",
        )
        g.add_argument(
            "--max_server_error_attempts",
            type=positive_int,
            default=2,
            help="tries of a resource that keeps answering 500 (a transcode the server "
            "cannot do) before it is dead-lettered",
        )


# JSON + JPEG pairs (pipelines.store_json_jpeg). Its shared options (--input, --output,
# --storage_class, batching, --on_exists...) are StoreOptions': an option defined by two classes
# would break Beam's parser.
class StoreJsonJpegOptions(PipelineOptions):
    """Options of pipelines.store_json_jpeg that pipelines.store does not have."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("JSON + JPEG")
        g.add_argument(
            "--template",
            help="a DICOM JSON dataset for every JPEG matched by --input (not one JSON each)",
        )
        g.add_argument(
            "--metadata_csv",
            help="with --template: per-image values; header row 'file,<DICOM keyword>,...', the "
            "first column holding the JPEG's base name",
        )
        g.add_argument(
            "--mode",
            dest="json_jpeg_mode",
            choices=("server", "client"),
            help="server: the store creates instances from JSON + JPEG (default for Google "
            "stores); client: build Part 10 here and store it (default for other servers)",
        )
        g.add_argument(
            "--generate_uids",
            action="store_true",
            help="generate missing Study/Series/SOP Instance UIDs, deterministically (one study "
            "and series per input folder)",
        )
        g.add_argument(
            "--uid_root",
            default=None,
            help="root of generated UIDs (default: pydicom's 1.2.826.0.1.3680043.8.498; use "
            "your organisation's)",
        )
        g.add_argument("--sop_class_uid", help="SOPClassUID for metadata that has none")
        g.add_argument(
            "--fix_metadata",
            action="store_true",
            help="take Rows, Columns, PhotometricInterpretation... from the JPEG where the "
            "metadata disagrees (instead of a dead letter)",
        )
        g.add_argument(
            "--build_only",
            action="store_true",
            help="validate and write the Part 10 files client mode would send under "
            "OUTPUT/dicom/, without sending anything",
        )
