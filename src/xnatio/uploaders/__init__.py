"""The two transports: parallel REST import and parallel DICOM C-STORE."""

from __future__ import annotations

from xnatio.uploaders.rest import (
    BatchOutcome,
    UploadCancelled,
    UploadPlan,
    UploadResult,
    plan_upload,
    upload_dicom_parallel_rest,
)

__all__ = [
    "BatchOutcome",
    "UploadCancelled",
    "UploadPlan",
    "UploadResult",
    "plan_upload",
    "upload_dicom_parallel_rest",
]
