"""Options shared by the commands that talk to an XNAT server, and how they become a config."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from xnatio.config import XnatConfig, resolve_config
from xnatio.errors import InputError
from xnatio.options import check_seconds

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


def load_config(
    *,
    server: str | None,
    user: str | None,
    password_stdin: bool,
    insecure: bool,
    env_name: str | None,
    required: bool,
) -> XnatConfig | None:
    """Resolve server and credentials; prompt for a hidden password on a terminal if needed.

    Parameters
    ----------
    server, user
        Values of ``--server`` and ``--user`` (None when not given).
    password_stdin
        Read the password from standard input (``--password-stdin``).
    insecure
        Turn TLS verification off (``--insecure``), with a warning.
    env_name
        Read ``.env.NAME`` instead of ``.env`` (``--env NAME``).
    required
        Raise when no server is configured anywhere.

    Returns
    -------
    XnatConfig or None
        None only when no server is configured and ``required`` is False.
    """
    password = read_password_stdin() if password_stdin else None
    verify: bool | None = False if insecure else None
    try:
        config = resolve_config(
            server=server, username=user, password=password, verify_tls=verify, env_name=env_name
        )
    except InputError as exc:
        if "no password" in exc.message and sys.stdin.isatty():
            config = resolve_config(
                server=server,
                username=user,
                password=click.prompt("XNAT password", hide_input=True),
                verify_tls=verify,
                env_name=env_name,
            )
        else:
            raise
    if config is None and required:
        raise InputError("no XNAT server given: pass --server URL or set XNAT_SERVER")
    if insecure:
        click.echo("xio: warning: TLS certificate verification is OFF (--insecure)", err=True)
    return config


@dataclass(frozen=True)
class ServerOptions:
    """The server and credential options of one command line (no password: never a flag)."""

    server: str | None
    user: str | None
    password_stdin: bool
    insecure: bool
    env_name: str | None

    def config(self, *, required: bool = True) -> XnatConfig | None:
        """Resolve these options with the environment, ``.env`` and ``~/.netrc``."""
        return load_config(
            server=self.server,
            user=self.user,
            password_stdin=self.password_stdin,
            insecure=self.insecure,
            env_name=self.env_name,
            required=required,
        )

    def required_config(self) -> XnatConfig:
        """Like :meth:`config`, for commands that cannot run without a server."""
        config = self.config(required=True)
        assert config is not None  # required=True raises instead
        return config


_SERVER_OPTIONS = (
    click.option("--server", help="XNAT URL (or XNAT_SERVER)."),
    click.option("--user", help="XNAT username (or XNAT_USERNAME)."),
    click.option("--password-stdin", is_flag=True, help="Read the password from standard input."),
    click.option("--insecure", is_flag=True, help="Do not verify TLS certificates."),
    click.option("--env", "env_name", metavar="NAME", help="Read .env.NAME instead of .env."),
)


def server_options(func: F) -> F:
    """Add ``--server --user --password-stdin --insecure --env`` to a command.

    The command receives them as one ``creds: ServerOptions`` argument.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["creds"] = ServerOptions(
            server=kwargs.pop("server"),
            user=kwargs.pop("user"),
            password_stdin=kwargs.pop("password_stdin"),
            insecure=kwargs.pop("insecure"),
            env_name=kwargs.pop("env_name"),
        )
        return func(*args, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_SERVER_OPTIONS):
        decorated = option(decorated)
    return cast(F, decorated)
