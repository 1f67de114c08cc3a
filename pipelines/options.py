"""Command-line options of the jobs, and their translation into transform configuration.

Option ``dest`` names are also the Flex Template parameter names. Secrets are never options:
``--token_env`` and ``--password_env`` name environment variables that hold them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

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
        g.add_argument(
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
        g.add_argument(
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
