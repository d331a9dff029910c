"""xnatio: fast, verifiable DICOM session uploads to XNAT.

Everything public is named in ``__all__`` below and documented in docs/api.md; other modules are
internal and may change. Names are imported on first use, so ``import xnatio`` (and ``xio -h``)
stays cheap: nothing of the upload machinery, pydicom or numpy is loaded until it is needed.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from xnatio.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InputError,
    ServerResponseError,
    XnatioError,
)

if TYPE_CHECKING:
    from xnatio.anonymize.profile import BasicProfileOptions
    from xnatio.config import XnatConfig
    from xnatio.many import upload_many
    from xnatio.options import DicomOptions, DicomTls, RestOptions
    from xnatio.plan import UploadPlan, plan_upload
    from xnatio.progress import ProgressEvent
    from xnatio.result.outcome import (
        DicomStoreCancelled,
        DicomStoreResult,
        UploadCancelled,
        UploadResult,
    )
    from xnatio.sandbox import Faults, Sandbox, SandboxConfig
    from xnatio.transport.dicom_store import InstanceOutcome
    from xnatio.transport.resources import ResourceUploadResult, upload_resource
    from xnatio.transport.rest import BatchOutcome
    from xnatio.upload import send_dicom_store, upload_dicom_parallel_rest, upload_session
    from xnatio.upload.anonymize import Anonymization
    from xnatio.verify import Comparison, VerifyReport, verify_session
    from xnatio.xnat.admin import (
        ScanSummary,
        ServerInfo,
        create_project,
        list_scans,
        server_info,
    )

__version__ = "0.1.0"

# name -> module that defines it; loaded by __getattr__ on first use.
_LAZY = {
    "Anonymization": "xnatio.upload.anonymize",
    "BasicProfileOptions": "xnatio.anonymize.profile",
    "BatchOutcome": "xnatio.transport.rest",
    "Comparison": "xnatio.verify",
    "DicomOptions": "xnatio.options",
    "DicomStoreCancelled": "xnatio.result.outcome",
    "DicomStoreResult": "xnatio.result.outcome",
    "DicomTls": "xnatio.options",
    "Faults": "xnatio.sandbox",
    "InstanceOutcome": "xnatio.transport.dicom_store",
    "ProgressEvent": "xnatio.progress",
    "ResourceUploadResult": "xnatio.transport.resources",
    "RestOptions": "xnatio.options",
    "Sandbox": "xnatio.sandbox",
    "SandboxConfig": "xnatio.sandbox",
    "ScanSummary": "xnatio.xnat.admin",
    "ServerInfo": "xnatio.xnat.admin",
    "UploadCancelled": "xnatio.result.outcome",
    "UploadPlan": "xnatio.plan",
    "UploadResult": "xnatio.result.outcome",
    "VerifyReport": "xnatio.verify",
    "XnatConfig": "xnatio.config",
    "create_project": "xnatio.xnat.admin",
    "list_scans": "xnatio.xnat.admin",
    "plan_upload": "xnatio.plan",
    "send_dicom_store": "xnatio.upload",
    "server_info": "xnatio.xnat.admin",
    "upload_dicom_parallel_rest": "xnatio.upload",
    "upload_many": "xnatio.many",
    "upload_resource": "xnatio.transport.resources",
    "upload_session": "xnatio.upload",
    "verify_session": "xnatio.verify",
}

__all__ = [
    "Anonymization",
    "AuthenticationError",
    "BasicProfileOptions",
    "BatchOutcome",
    "Comparison",
    "ConnectionFailedError",
    "DicomOptions",
    "DicomStoreCancelled",
    "DicomStoreResult",
    "DicomTls",
    "Faults",
    "InputError",
    "InstanceOutcome",
    "ProgressEvent",
    "ResourceUploadResult",
    "RestOptions",
    "Sandbox",
    "SandboxConfig",
    "ScanSummary",
    "ServerInfo",
    "ServerResponseError",
    "UploadCancelled",
    "UploadPlan",
    "UploadResult",
    "VerifyReport",
    "XnatConfig",
    "XnatioError",
    "__version__",
    "create_project",
    "list_scans",
    "plan_upload",
    "send_dicom_store",
    "server_info",
    "upload_dicom_parallel_rest",
    "upload_many",
    "upload_resource",
    "upload_session",
    "verify_session",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xnatio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


logging.getLogger(__name__).addHandler(logging.NullHandler())
