"""The ``xio`` command line: parses options, calls the library, renders the outcome.

Each sub-command lives in its own module under :mod:`xnatio.cli` and is imported only when
it is run, so ``xio --version`` and ``xio -h`` stay fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from xnatio import __version__
from xnatio.errors import XnatioError

# name -> "module:attribute" of a click command
_COMMANDS: dict[str, tuple[str, str]] = {
    "upload-dicom": (
        "xnatio.cli.upload_dicom:command",
        "Upload a DICOM session (REST or C-STORE).",
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
}


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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="xio", message="%(prog)s %(version)s")
def app() -> None:
    """xio: upload DICOM sessions to XNAT fast, and prove they landed."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``xio`` and ``xnatio`` console scripts.

    Errors from xnatio become one line on stderr and the exit code of the error's class; nothing
    prints a traceback unless ``XNATIO_DEBUG=1`` is set. Commands end with ``ctx.exit(code)`` to
    choose a non-zero exit code after a normal return (for example 1 when some files failed).
    """
    debug = os.environ.get("XNATIO_DEBUG") == "1"
    try:
        code = app.main(args=argv, prog_name="xio", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("xio: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except XnatioError as exc:
        if debug:
            raise
        click.echo(f"xio: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("xio: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # A bug, not a user error: still one line, with the way to get the details.
        if debug:
            raise
        click.echo(
            f"xio: internal error: {type(exc).__name__}: {exc}; run again with XNATIO_DEBUG=1 "
            "for the traceback and please report it",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


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
