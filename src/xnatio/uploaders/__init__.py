"""The seed's entry points, kept where earlier versions had them.

``from xnatio.uploaders import upload_dicom_parallel_rest`` keeps working; new code can import the
same names from :mod:`xnatio` itself.
"""

from __future__ import annotations

from xnatio.options import DicomTls
from xnatio.plan import UploadPlan, plan_upload
from xnatio.result.outcome import (
    DicomStoreCancelled,
    DicomStoreResult,
    UploadCancelled,
    UploadResult,
)
from xnatio.transport.dicom_store import InstanceOutcome
from xnatio.transport.resources import ResourceUploadResult, upload_resource
from xnatio.transport.rest import BatchOutcome
from xnatio.upload import send_dicom_store, upload_dicom_parallel_rest

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
