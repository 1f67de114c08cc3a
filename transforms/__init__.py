"""dicomweb-beam: PTransforms for DICOMweb stores, and the Beam-free code under them.

Public API (import from the modules, or from here):

    from transforms import ReadDicomFiles, WriteToDicomStore, StowConfig, DicomwebEndpoint
"""

from transforms.auth import AuthConfig
from transforms.dead_letter import DeadLetter, Reason
from transforms.endpoint import DicomwebEndpoint
from transforms.http import RetryPolicy
from transforms.read_dicom import ReadAllDicomFiles, ReadDicomFiles
from transforms.records import DicomFile, InstanceUids, StoredInstance, StowBatch
from transforms.results import ReadResult, StoreResult
from transforms.stow import WriteToDicomStore
from transforms.stow_client import StowConfig

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
]
