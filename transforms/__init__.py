"""dicomweb-beam: PTransforms for DICOMweb stores, and the Beam-free code under them.

Layout:

- ``transforms.dicomweb``: the DICOMweb client (endpoint, auth, retrying HTTP, multipart, STOW and
  QIDO clients, response parsing). No Beam: usable from any script.
- ``transforms.dicom``: Part 10 files (header walk, validation). No Beam.
- ``transforms.records``, ``transforms.dead_letter``, ``transforms.errors``: the element types, the
  one dead-letter shape, and the errors of the Beam-free layers. No Beam.
- ``transforms.read_dicom``, ``transforms.stow``, ...: the PTransforms, one module per family.

Public API (import from the modules, or from here):

    from transforms import ReadDicomFiles, WriteToDicomStore, StowConfig, DicomwebEndpoint

The re-exports are lazy (PEP 562 ``__getattr__``): importing ``transforms.dicomweb.http`` must not
pay for Apache Beam (several seconds), so nothing here is imported until it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AuthConfig": "transforms.dicomweb.auth",
    "DeadLetter": "transforms.dead_letter",
    "DicomFile": "transforms.records",
    "DicomwebEndpoint": "transforms.dicomweb.endpoint",
    "InstanceUids": "transforms.records",
    "ReadAllDicomFiles": "transforms.read_dicom",
    "ReadDicomFiles": "transforms.read_dicom",
    "ReadResult": "transforms.results",
    "Reason": "transforms.dead_letter",
    "RetryPolicy": "transforms.dicomweb.http",
    "StoreResult": "transforms.results",
    "StoredInstance": "transforms.records",
    "StowBatch": "transforms.records",
    "StowConfig": "transforms.dicomweb.stow",
    "WriteToDicomStore": "transforms.stow",
    # search (QIDO-RS)
    "MatchBatch": "transforms.records",
    "Paging": "transforms.dicomweb.qido",
    "QueriesResult": "transforms.results",
    "ReadQueries": "transforms.search",
    "SearchConfig": "transforms.dicomweb.qido",
    "SearchDicomStore": "transforms.search",
    "SearchMatch": "transforms.records",
    "SearchQuery": "transforms.records",
    "SearchResult": "transforms.results",
    # delete
    "DeleteConfig": "transforms.dicomweb.delete",
    "DeleteFromDicomStore": "transforms.delete",
    "DeleteResult": "transforms.results",
    "DeletedTarget": "transforms.records",
    "GateDeletes": "transforms.delete",
    "PlanDeletes": "transforms.delete",
    "PlanResult": "transforms.results",
    "PlannedDelete": "transforms.records",
    # retrieve (WADO-RS)
    "Layout": "transforms.dicomweb.wado",
    "RetrieveFromDicomStore": "transforms.retrieve",
    "RetrieveResult": "transforms.results",
    "RetrievedFile": "transforms.records",
    "Target": "transforms.targets",
    "WadoConfig": "transforms.dicomweb.wado",
    # JSON + JPEG pairs (pipelines.store_json_jpeg)
    "BuildDicomFiles": "transforms.store_json_jpeg",
    "BuildOptions": "transforms.dicom.build",
    "BuildResult": "transforms.results",
    "CreatedInstance": "transforms.records",
    "PairsResult": "transforms.results",
    "PreparedInstance": "transforms.dicom.build",
    "ReadJsonJpegPairs": "transforms.read_json_jpeg",
    "StoreJsonJpegPairs": "transforms.store_json_jpeg",
}

__all__ = [
    "AuthConfig",
    "DeadLetter",
    "DicomFile",
    "DicomwebEndpoint",
    "InstanceUids",
    "ReadAllDicomFiles",
    "ReadDicomFiles",
    "ReadResult",
    "Reason",
    "RetryPolicy",
    "StoreResult",
    "StoredInstance",
    "StowBatch",
    "StowConfig",
    "WriteToDicomStore",
    # search (QIDO-RS)
    "MatchBatch",
    "Paging",
    "QueriesResult",
    "ReadQueries",
    "SearchConfig",
    "SearchDicomStore",
    "SearchMatch",
    "SearchQuery",
    "SearchResult",
    # delete
    "DeleteConfig",
    "DeleteFromDicomStore",
    "DeleteResult",
    "DeletedTarget",
    "GateDeletes",
    "PlanDeletes",
    "PlanResult",
    "PlannedDelete",
    # retrieve (WADO-RS)
    "Layout",
    "RetrieveFromDicomStore",
    "RetrieveResult",
    "RetrievedFile",
    "Target",
    "WadoConfig",
    # JSON + JPEG pairs (pipelines.store_json_jpeg)
    "BuildDicomFiles",
    "BuildOptions",
    "BuildResult",
    "CreatedInstance",
    "PairsResult",
    "PreparedInstance",
    "ReadJsonJpegPairs",
    "StoreJsonJpegPairs",
]

if TYPE_CHECKING:  # for type checkers and IDEs only; never executed
    from transforms.dead_letter import DeadLetter, Reason
    from transforms.dicomweb.auth import AuthConfig
    from transforms.dicomweb.endpoint import DicomwebEndpoint
    from transforms.dicomweb.http import RetryPolicy
    from transforms.dicomweb.stow import StowConfig
    from transforms.read_dicom import ReadAllDicomFiles, ReadDicomFiles
    from transforms.records import DicomFile, InstanceUids, StoredInstance, StowBatch
    from transforms.results import ReadResult, StoreResult
    from transforms.stow import WriteToDicomStore

if TYPE_CHECKING:  # search (QIDO-RS)
    from transforms.dicomweb.qido import Paging, SearchConfig
    from transforms.records import MatchBatch, SearchMatch, SearchQuery
    from transforms.results import QueriesResult, SearchResult
    from transforms.search import ReadQueries, SearchDicomStore

if TYPE_CHECKING:  # delete
    from transforms.delete import DeleteFromDicomStore, GateDeletes, PlanDeletes
    from transforms.dicomweb.delete import DeleteConfig
    from transforms.records import DeletedTarget, PlannedDelete
    from transforms.results import DeleteResult, PlanResult
if TYPE_CHECKING:  # retrieve (WADO-RS)
    from transforms.dicomweb.wado import Layout, WadoConfig
    from transforms.records import RetrievedFile
    from transforms.results import RetrieveResult
    from transforms.retrieve import RetrieveFromDicomStore
    from transforms.targets import Target
if TYPE_CHECKING:  # JSON + JPEG pairs (pipelines.store_json_jpeg)
    from transforms.dicom.build import BuildOptions, PreparedInstance
    from transforms.read_json_jpeg import ReadJsonJpegPairs
    from transforms.records import CreatedInstance
    from transforms.results import BuildResult, PairsResult
    from transforms.store_json_jpeg import BuildDicomFiles, StoreJsonJpegPairs


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
