"""The transports: parallel REST import, parallel DICOM C-STORE, and resource uploads."""

from __future__ import annotations

from xnatio.transport.dicom_store import (
    DicomStoreCancelled,
    DicomStoreResult,
    DicomTls,
    InstanceOutcome,
    send_dicom_store,
)
from xnatio.transport.resources import ResourceUploadResult, upload_resource
from xnatio.transport.rest import (
    BatchOutcome,
    UploadCancelled,
    UploadPlan,
    UploadResult,
    plan_upload,
    upload_dicom_parallel_rest,
)

__all__ = [
    "BatchOutcome",
    "DicomStoreCancelled",
    "DicomStoreResult",
    "DicomTls",
    "InstanceOutcome",
    "ResourceUploadResult",
    "UploadCancelled",
    "UploadPlan",
    "UploadResult",
    "plan_upload",
    "send_dicom_store",
    "upload_dicom_parallel_rest",
    "upload_resource",
]
