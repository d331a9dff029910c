"""xnatio: fast, verifiable DICOM session uploads to XNAT.

The public surface is small: the uploaders in :mod:`xnatio.uploaders`, the sandbox server in
:mod:`xnatio.sandbox`, and the error types below.
"""

from __future__ import annotations

import logging

from xnatio.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InputError,
    ServerResponseError,
    XnatioError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConnectionFailedError",
    "InputError",
    "ServerResponseError",
    "XnatioError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
