"""One exception tree for everything xnatio raises.

Session-level failures raise; per-file outcomes are returned as data in result objects. Each
exception maps to a command-line exit code (see :data:`EXIT_CODES` in :mod:`xnatio.cli.app`).
"""

from __future__ import annotations


class XnatioError(Exception):
    """Base class of every error raised by xnatio.

    Parameters
    ----------
    message
        One line that names the problem and, where possible, the fix.
    """

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(XnatioError):
    """Bad input from the user: missing source, no DICOM files, invalid labels (exit code 2)."""

    exit_code = 2


class AuthenticationError(XnatioError):
    """The server refused the credentials; nothing was sent (exit code 3)."""

    exit_code = 3


class ConnectionFailedError(XnatioError):
    """The server could not be reached before anything was sent (exit code 3)."""

    exit_code = 3


class ServerResponseError(XnatioError):
    """The server answered with an unexpected status or body.

    Parameters
    ----------
    message
        What went wrong, in one line.
    status_code
        The HTTP status code, if there was a response.
    url
        The request URL without credentials.
    body
        The start of the response body (at most 500 characters).
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, url: str = "", body: str = ""
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url
        self.body = body[:500]
