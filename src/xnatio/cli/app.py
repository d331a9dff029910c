"""The ``xio`` command line: parses options, calls the library, renders the outcome.

Each sub-command lives in its own module under :mod:`xnatio.cli` and is imported only when
it is run, so ``xio --version`` and ``xio -h`` stay fast.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from xnatio import __version__
from xnatio.errors import XnatioError

#: Every command's help: ``-h`` as well as ``--help``, wrapped at 100 columns.
HELP_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name -> "module:attribute" of a click command
_COMMANDS: dict[str, tuple[str, str]] = {
    "upload-dicom": (
        "xnatio.cli.upload_dicom:command",
        "Upload a DICOM session (REST or C-STORE).",
    ),
    "anonymize": (
        "xnatio.cli.anonymize:command",
        "Write de-identified copies of DICOM files (to check a script first).",
    ),
    "sandbox": (
        "xnatio.cli.sandbox:command",
        "Run an XNAT-compatible server for tests and trials.",
    ),
    "synth": ("xnatio.cli.synth:command", "Write a synthetic DICOM session."),
    "verify": (
        "xnatio.cli.verify:command",
        "Check that a server session holds exactly the local instances.",
    ),
    "demo": (
        "xnatio.cli.demo:command",
        "Try xio end to end on an embedded sandbox (no XNAT needed).",
    ),
    "upload-resource": (
        "xnatio.cli.upload_resource:command",
        "Upload non-DICOM files into a session or scan resource.",
    ),
    "upload-many": ("xnatio.cli.upload_many:command", "Upload many sessions in one run."),
    "ping": ("xnatio.cli.ping:ping", "Check the server, the login and XNAT's version."),
    "whoami": ("xnatio.cli.ping:whoami", "Show the account, server and XNAT version in use."),
    "echo": ("xnatio.cli.echo:command", "Send a C-ECHO to the DICOM receiver."),
    "create-project": (
        "xnatio.cli.projects:create_project_command",
        "Create a project if missing.",
    ),
    "list-scans": ("xnatio.cli.projects:list_scans_command", "List a session's scans and files."),
    "config": ("xnatio.cli.config_cli:command", "Show profiles and the settings in effect."),
    "journal": ("xnatio.cli.journal_cli:command", "List or prune the upload journals."),
}

# Commands of the earlier public xnatio (0.2) that xio does not have (docs/migrating.md).
_XNATIO_02_ONLY = frozenset(
    {
        "download-session",
        "extract-session",
        "delete-scans",
        "rename-subjects",
        "rename-subjects-pattern",
        "add-user-to-groups",
        "refresh-catalogs",
        "apply-label-fixes",
    }
)


class _LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        target, _ = _COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in _COMMANDS:
            ctx.fail(_no_such_command(name))
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _no_such_command(name: str) -> str:
    """``No such command 'X'``, with the closest names or where an xnatio 0.2 command went."""
    message = f"No such command {name!r}"
    if name in _XNATIO_02_ONLY:
        return f"{message}: xio does not have this xnatio 0.2 command (see docs/migrating.md)"
    import difflib  # only for a mistyped command (start-up time of the others)

    close = difflib.get_close_matches(name, _COMMANDS, n=2, cutoff=0.6)
    if close:
        return f"{message} (did you mean {' or '.join(repr(c) for c in close)})"
    return message


@click.group(cls=_LazyGroup, context_settings=HELP_SETTINGS)
@click.version_option(
    __version__, "-V", "--version", prog_name="xio", message="%(prog)s %(version)s"
)
def app() -> None:
    """xio: upload DICOM sessions to XNAT fast, and prove they landed."""


EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_AUTH = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report


class _Termination:
    """SIGTERM handled like Ctrl-C: raised as KeyboardInterrupt in the main thread.

    Every path that stops cleanly on Ctrl-C (the transports stop sending, keep what was
    confirmed in the journal and report it) then does the same on SIGTERM; only the wording
    and the exit code differ. A second SIGTERM while stopping changes nothing (SIGKILL does).
    """

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            return
        self.received = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def code(self, code: int) -> int:
        """The exit code: an interruption caused by SIGTERM exits 143."""
        return EXIT_TERMINATED if code == EXIT_INTERRUPTED and self.received else code

    def line(self, message: str = "") -> str:
        """``xio: interrupted: DETAIL`` (or ``terminated by SIGTERM``) from a library message."""
        word = "terminated by SIGTERM" if self.received else "interrupted"
        detail = message.removeprefix("interrupted").lstrip(":; ")
        return f"xio: {word}: {detail}" if detail else f"xio: {word}"


def _one_line(text: str) -> str:
    """Click's message on one line, without its closing full stop (a hint may follow)."""
    return " ".join(text.split()).rstrip(".")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``xio`` and ``xnatio`` console scripts.

    Errors become one line on stderr and an exit code; nothing prints a traceback unless
    ``XNATIO_DEBUG=1`` is set, which adds the traceback and keeps the exit code. Commands end
    with ``ctx.exit(code)`` to choose a non-zero exit code after a normal return.

    Exit codes:

    ===  ==============================================================================
    0    everything landed (or matched)
    1    some files failed or are missing (listed); also an internal error (a bug)
    2    usage or input error; nothing was sent
    3    login or connection failed before anything was sent
    130  interrupted by Ctrl-C (SIGINT); run the same command with ``--resume``
    143  terminated by SIGTERM, handled like Ctrl-C; run the same command with ``--resume``
    ===  ==============================================================================
    """
    debug = os.environ.get("XNATIO_DEBUG") == "1"
    term = _Termination()
    with term.installed():
        try:
            code = _run(argv, term, debug=debug)
        except KeyboardInterrupt:  # arrived while an error was being printed
            code = EXIT_INTERRUPTED
    sys.exit(term.code(code))


def _run(argv: list[str] | None, term: _Termination, *, debug: bool) -> int:
    """Run the command line; return the exit code after printing any error as one line."""
    try:
        code = app.main(args=argv, prog_name="xio", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        if debug:
            traceback.print_exc()  # where the interruption stopped the command
        click.echo(term.line(), err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:  # 'xio' or 'xio journal' alone: the help
        click.echo(exc.format_message(), err=True)
        return exc.exit_code
    except click.UsageError as exc:
        hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        click.echo(f"xio: error: {_one_line(exc.format_message())}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"xio: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except XnatioError as exc:
        if debug:
            traceback.print_exc()
        if exc.exit_code == EXIT_INTERRUPTED:  # the library's Ctrl-C result, with what was sent
            click.echo(term.line(exc.message), err=True)
        else:
            click.echo(f"xio: error: {exc.message}", err=True)
        return exc.exit_code
    except Exception as exc:
        # A bug, not a user error: still one line, with the way to get the details.
        if debug:
            traceback.print_exc()
        click.echo(
            f"xio: internal error: {type(exc).__name__}: {exc}; run again with XNATIO_DEBUG=1 "
            "for the traceback and please report it",
            err=True,
        )
        return EXIT_PARTIAL
    return code if isinstance(code, int) else EXIT_OK


def configure_logging(verbose: int, quiet: bool) -> None:
    """Send xnatio's log records to stderr at a level chosen by ``-v``/``-q``."""
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("xio: %(levelname)s: %(message)s"))
    root = logging.getLogger("xnatio")
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Security warnings (a password file readable by others) are shown even with -q.
    logging.getLogger("xnatio.config").setLevel(min(level, logging.WARNING))
