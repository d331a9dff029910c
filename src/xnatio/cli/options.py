"""Options shared by the commands that talk to an XNAT server, and how they become a config."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import click

from xnatio.cli.app import HELP_SETTINGS
from xnatio.config import Resolution, XnatConfig, resolve_settings
from xnatio.errors import InputError
from xnatio.options import DicomOptions, DicomTls, check_seconds
from xnatio.xnat.naming import Labels, validate_labels

F = TypeVar("F", bound=Callable[..., Any])


class Seconds(click.types.FloatParamType):
    """A number of seconds: finite (no ``nan`` or ``inf``) and at least ``minimum``.

    Python's ``float()`` accepts ``nan``, ``inf`` and ``1e400``; timers and socket timeouts
    then fail later with ValueError or OverflowError, possibly after data was sent. The option
    parser refuses them instead, with the rule of :func:`xnatio.options.check_seconds`.
    """

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SECONDS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        name = param.opts[0] if param is not None and param.opts else "value"
        number = super().convert(value, param, ctx)  # "abc" -> click's own message
        try:
            return check_seconds(name, number, minimum=self.minimum)
        except InputError as exc:
            raise click.UsageError(exc.message, ctx) from None


def seconds_option(
    flag: str, default: float | None, help: str, minimum: float = 0.0
) -> Callable[[F], F]:
    """An option of ``SECONDS`` (finite, at least ``minimum``); a ``default`` is shown."""
    return click.option(
        flag,
        type=Seconds(minimum=minimum),
        default=default,
        show_default=default is not None,
        help=help,
    )


def timeout_option(default: float | None, help: str, minimum: float = 0.1) -> Callable[[F], F]:
    """``--timeout SECONDS``, at least 0.1 s unless ``minimum`` says otherwise."""
    return seconds_option("--timeout", default, help, minimum)


if TYPE_CHECKING:  # click 8.2+ makes Path generic; click 8.1 cannot subscript it
    _PathType = click.Path[Path]
else:
    _PathType = click.Path


class InputPath(_PathType):
    """A SOURCE or PATH argument: a path, but not an empty string.

    ``Path("")`` is the current folder, so an empty argument (an unset shell variable, for
    example) would upload or compare whatever the command runs in.
    """

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(
        self,
        value: str | os.PathLike[str],
        param: click.Parameter | None,
        ctx: click.Context | None,
    ) -> Path:
        if isinstance(value, str) and not value.strip():
            name = param.human_readable_name if param is not None else "the path"
            raise click.UsageError(f"{name} is empty; give a folder or a file", ctx)
        return super().convert(value, param, ctx)


def read_password_stdin() -> str:
    """Read a password from the first line of standard input."""
    line = sys.stdin.readline()
    if not line:
        raise InputError("--password-stdin: standard input is empty")
    return line.rstrip("\r\n")


@dataclass(frozen=True)
class ServerOptions:
    """The server and credential options of one command line (no password: never a flag).

    Attributes
    ----------
    server, user
        Values of ``--server`` and ``--user`` (None when not given).
    password_stdin
        Read the password from standard input (``--password-stdin``).
    insecure
        Turn TLS verification off (``--insecure``), with a warning.
    env_name
        ``--env``: read ``.env.NAME``, or the file at a path (xnatio 0.2's meaning).
    profile
        ``--profile NAME``: a profile of the config file.
    """

    server: str | None
    user: str | None
    password_stdin: bool
    insecure: bool
    env_name: str | None
    profile: str | None = None

    def config(self, *, required: bool = True) -> XnatConfig | None:
        """Resolve these options with profiles, the environment, ``.env`` and ``~/.netrc``;
        prompt for a hidden password on a terminal if one is needed.

        Returns None only when no server is configured and ``required`` is False.
        """
        settings = self._resolve(read_password=self.password_stdin)
        missing = settings.server is not None and settings.username and settings.password is None
        if missing and sys.stdin.isatty():
            typed = click.prompt("XNAT password", hide_input=True)
            settings = replace(settings, password=typed)
        config = settings.config()
        if config is None and required:
            raise InputError(
                "no XNAT server given: pass --server URL or --profile NAME, or set XNAT_SERVER"
            )
        if self.insecure:
            click.echo("xio: warning: TLS certificate verification is OFF (--insecure)", err=True)
        return config

    def required_config(self) -> XnatConfig:
        """Like :meth:`config`, for commands that cannot run without a server."""
        config = self.config(required=True)
        assert config is not None  # required=True raises instead
        return config

    def settings(self) -> Resolution:
        """The settings in effect and their sources, without prompting or checking them.

        ``--password-stdin`` is not read here (a password is never shown anyway).
        """
        return self._resolve(read_password=False)

    def _resolve(self, *, read_password: bool) -> Resolution:
        return resolve_settings(
            server=self.server,
            username=self.user,
            password=read_password_stdin() if read_password else None,
            verify_tls=False if self.insecure else None,
            env_name=self.env_name,
            profile=self.profile,
        )


def load_config(*, required: bool, **flags: Any) -> XnatConfig | None:
    """:meth:`ServerOptions.config` for the flags given as keywords (``server``, ``user``,
    ``password_stdin``, ``insecure``, ``env_name``, ``profile``); kept for older callers."""
    return ServerOptions(**flags).config(required=required)


_SERVER_OPTIONS = (
    click.option("--server", metavar="URL", help="XNAT URL (or XNAT_SERVER, or a profile)."),
    click.option("--user", metavar="NAME", help="XNAT username (or XNAT_USERNAME)."),
    click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of standard input.",
    ),
    click.option(
        "--insecure",
        is_flag=True,
        help="Do not verify the server's TLS certificate (tests only; a warning is printed).",
    ),
    click.option(
        "--profile",
        metavar="NAME",
        help="Use profile NAME of the config file (see 'xio config list'; or XNATIO_PROFILE).",
    ),
    click.option(
        "--env",
        "env_name",
        metavar="NAME|PATH",
        help="Read .env.NAME instead of .env, or the env file at PATH (xnatio 0.2).",
    ),
)


def with_options(func: Callable[..., Any], options: Sequence[Callable[[Any], Any]]) -> Any:
    """``func`` with click ``options`` added, in the order given (as if stacked above it)."""
    for option in reversed(options):
        func = option(func)
    return func


def _bundled(func: F, options: Sequence[Callable[[Any], Any]], name: str, cls: type) -> F:
    """``func`` with ``options`` added, receiving their values as one ``name=cls(...)`` argument
    (the dataclass ``cls`` names its fields as the options' keyword arguments)."""
    keys = [f.name for f in fields(cls)]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs[name] = cls(**{key: kwargs.pop(key) for key in keys})
        return func(*args, **kwargs)

    return cast(F, with_options(wrapper, options))


def server_options(func: F) -> F:
    """Add ``--server --user --password-stdin --insecure --profile --env`` to a command.

    The command receives them as one ``creds: ServerOptions`` argument.
    """
    return _bundled(func, _SERVER_OPTIONS, "creds", ServerOptions)


_PEM_FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


def output_options(
    *, progress: str | None = None, json_help: str = "Machine-readable summary on stdout."
) -> Callable[[F], F]:
    """Add ``--json``, ``--progress`` (when ``progress`` gives its help), ``-v`` and ``-q``.

    One definition for every command that reports a run, so that the flags read the same
    everywhere (``as_json``, ``progress_mode``, ``verbose`` and ``quiet`` keyword arguments).
    """
    options = [click.option("--json", "as_json", is_flag=True, help=json_help)]
    if progress is not None:
        options.append(
            click.option(
                "--progress",
                "progress_mode",
                type=click.Choice(["auto", "bar", "json", "none"]),
                default="auto",
                show_default=True,
                help=progress,
            )
        )
    options.append(
        click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    )
    options.append(click.option("-q", "--quiet", is_flag=True, help="Only errors."))

    def decorate(func: F) -> F:
        return cast(F, with_options(func, options))

    return decorate


_DICOM_OPTIONS = (
    click.option(
        "--dicom-host",
        metavar="HOST",
        help="DICOM receiver's host (or XNAT_DICOM_HOST; default: the XNAT server's host).",
    ),
    click.option(
        "--dicom-port",
        type=click.IntRange(1, 65535),
        default=None,
        help="DICOM receiver's port (or XNAT_DICOM_PORT; default 8104, XNAT's receiver).",
    ),
    click.option(
        "--dicom-called-aet",
        metavar="AET",
        default=None,
        help="The receiver's AE title (or XNAT_DICOM_CALLED_AET; default XNAT).",
    ),
    click.option(
        "--dicom-calling-aet",
        metavar="AET",
        default=None,
        help="Our AE title, as the receiver knows us (or XNAT_DICOM_CALLING_AET; default XNATIO).",
    ),
    click.option(
        "--dicom-tls",
        is_flag=True,
        help="Use TLS for DICOM associations (DICOM PS3.15 annex B.1).",
    ),
    click.option(
        "--dicom-tls-ca",
        type=_PEM_FILE,
        metavar="PEM",
        help="With --dicom-tls: the CA that signed the receiver's certificate (default: the "
        "system's CAs).",
    ),
    click.option(
        "--dicom-tls-cert",
        type=_PEM_FILE,
        metavar="PEM",
        help="With --dicom-tls: our client certificate, for receivers that ask for one.",
    ),
    click.option(
        "--dicom-tls-key",
        type=_PEM_FILE,
        metavar="PEM",
        help="With --dicom-tls: the private key of --dicom-tls-cert.",
    ),
)


@dataclass(frozen=True)
class DicomFlags:
    """The DICOM receiver's options of one command line, as given (None: not given)."""

    dicom_host: str | None
    dicom_port: int | None
    dicom_called_aet: str | None
    dicom_calling_aet: str | None
    dicom_tls: bool
    dicom_tls_ca: Path | None
    dicom_tls_cert: Path | None
    dicom_tls_key: Path | None

    def receiver(self, settings: Resolution) -> DicomOptions:
        """The receiver's address, AE titles and TLS, by one rule for ``echo`` and C-STORE.

        Each setting comes from its flag, else ``XNAT_DICOM_*`` in the environment, else the
        profile in effect (``settings.dicom``), else its default: the XNAT server's host, port
        8104, called AE title ``XNAT``, calling AE title ``XNATIO``.
        """
        given = settings.dicom
        host = self.dicom_host or given.get("dicom_host")
        if not host and settings.server is not None:
            host = urlsplit(settings.server).hostname
        if not host:
            raise InputError(
                "no DICOM host: pass --dicom-host, set XNAT_DICOM_HOST, or give --server or "
                "--profile"
            )
        port: Any = self.dicom_port or given.get("dicom_port") or 8104
        if not str(port).isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"DICOM port {port!r} is not a port number (1-65535)")
        tls = DicomTls(ca=self.dicom_tls_ca, cert=self.dicom_tls_cert, key=self.dicom_tls_key)
        return DicomOptions(
            host=str(host),
            port=int(port),
            called_aet=self.dicom_called_aet or given.get("dicom_called_aet") or "XNAT",
            calling_aet=self.dicom_calling_aet or given.get("dicom_calling_aet") or "XNATIO",
            tls=tls if self.dicom_tls else None,
        )


def dicom_options(func: F) -> F:
    """Add the DICOM receiver's options (``--dicom-host`` ... ``--dicom-tls-key``) to a command.

    The command receives them as one ``dicom: DicomFlags`` argument;
    :meth:`DicomFlags.receiver` turns them into :class:`~xnatio.options.DicomOptions`.
    """
    return _bundled(func, _DICOM_OPTIONS, "dicom", DicomFlags)


def _looks_like_path(value: str) -> bool:
    """A label that is surely a path: it has a separator, an archive suffix, or exists here."""
    if "/" in value or os.sep in value:
        return True
    if value.lower().endswith((".zip", ".tar", ".tgz", ".tar.gz", ".dcm")):
        return True
    try:
        return Path(value).exists()
    except OSError:
        return False


class LabelsCommand(click.Command):
    """A command whose last argument is a path after label arguments (PROJECT SUBJECT SESSION).

    When that path is missing and the argument before it looks like one, the session (or
    resource) label was most likely forgotten: say that, with the usage, instead of click's
    "Missing argument SOURCE".
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.MissingParameter as exc:
            arguments = [p for p in self.params if isinstance(p, click.Argument)]
            if len(arguments) < 2 or exc.param is not arguments[-1]:
                raise
            before = arguments[-2]
            value = ctx.params.get(before.name or "")
            if not isinstance(value, str) or not _looks_like_path(value):
                raise
            names = " ".join(a.human_readable_name for a in arguments)
            raise click.UsageError(
                f"{before.human_readable_name} {value!r} looks like a path, and "
                f"{arguments[-1].human_readable_name} is missing; usage: "
                f"{ctx.command_path} [OPTIONS] {names}",
                ctx,
            ) from None


def joined(labels: Labels, sep: str) -> str:
    """``PROJECT<sep>SUBJECT<sep>SESSION``: the labels as a path or a command line has them."""
    return sep.join((labels["project"], labels["subject"], labels["session"]))


def session_command(func: Callable[..., Any]) -> click.Command:
    """A command on one XNAT session: ``PROJECT SUBJECT SESSION`` come first, then the
    arguments declared below this decorator (a source or a resource and a path), with the
    missing-label hint of :class:`LabelsCommand`.

    The command receives the three as one ``labels: Labels`` argument, checked before anything
    else runs (a label with ``/`` or ``..`` would address another URL; and no password prompt,
    login or journal should come before that error).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        labels = Labels(
            project=kwargs.pop("project"),
            subject=kwargs.pop("subject"),
            session=kwargs.pop("session"),
        )
        validate_labels(**labels)
        return func(*args, labels=labels, **kwargs)

    arguments = [click.argument(name) for name in ("project", "subject", "session")]
    decorated = with_options(wrapper, arguments)
    return click.command(cls=LabelsCommand, context_settings=HELP_SETTINGS)(decorated)
