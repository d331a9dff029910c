"""The small commands people expect, through the real command line against the sandbox:
ping, whoami, echo, create-project, list-scans, journal prune, -V, a mistyped command, shell
completion, and help text on every option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import httpx
import pytest

import xnatio
from tests.cli_run import run_process
from xnatio.cli.app import _COMMANDS, app
from xnatio.sandbox import Sandbox

XIO = str(Path(sys.executable).parent / "xio")  # the console script, as a shell runs it


def xio(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_process(*args, env=env, cwd=cwd, timeout=120)


def server_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XNAT_", "XNATIO_"))}
    env.update({"XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"})
    env.update(extra)
    return env


# -- ping / whoami -----------------------------------------------------------------------------


def test_ping_and_whoami_say_server_login_and_version(sandbox: Sandbox) -> None:
    env = server_env(sandbox)
    proc = xio("ping", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert proc.stdout.startswith(f"OK: {sandbox.url} is XNAT 1.")
    assert "logged in as admin in " in proc.stdout
    proc = xio("whoami", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"admin on {sandbox.url} (XNAT 1.")
    data = json.loads(xio("whoami", "--json", env=env).stdout)
    assert data["ok"] is True and data["username"] == "admin" and data["alias_token"] is False
    assert data["xnat_version"].startswith("1.")


def test_whoami_with_an_alias_token_names_the_account_not_the_alias(sandbox: Sandbox) -> None:
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin")) as client:
        token = client.get("/data/services/tokens/issue").json()
    env = server_env(sandbox, XNAT_USERNAME=token["alias"], XNAT_PASSWORD=token["secret"])
    proc = xio("whoami", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("admin (with an alias token) on ")
    assert token["alias"] not in proc.stdout + proc.stderr
    assert token["secret"] not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["ping", "whoami"])
def test_ping_exits_3_when_the_login_or_the_server_fails(sandbox: Sandbox, command: str) -> None:
    proc = xio(command, env=server_env(sandbox, XNAT_PASSWORD="wrong"))
    assert proc.returncode == 3
    assert proc.stderr.startswith("xio: error: login to ") and proc.stderr.count("\n") == 1
    proc = xio(command, "--json", env=server_env(sandbox, XNAT_SERVER="http://127.0.0.1:9"))
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["ok"] is False and "cannot connect" in data["error"]
    env = server_env(sandbox)
    env.pop("XNAT_SERVER")
    proc = xio(command, env=env)
    assert proc.returncode == 2
    assert "no XNAT server given" in proc.stderr


# -- echo --------------------------------------------------------------------------------------


def test_echo_uses_the_dicom_store_options(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(dicom_port=0)
    env = server_env(sandbox)
    proc = xio(
        "echo", "--dicom-host", "127.0.0.1", "--dicom-port", str(sandbox.dicom_port), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"OK: C-ECHO from XNATIO to XNAT@127.0.0.1:{sandbox.dicom_port}")
    # The same XNAT_DICOM_* variables as an upload with --transport dicom-store; no password.
    env = server_env(sandbox, XNAT_DICOM_PORT=str(sandbox.dicom_port))
    env.pop("XNAT_PASSWORD")
    data = json.loads(xio("echo", "--json", env=env).stdout)
    assert data["ok"] is True and data["receiver"] == f"XNAT@127.0.0.1:{sandbox.dicom_port}"
    proc = xio("echo", "--dicom-port", "9", env=env)
    assert proc.returncode == 3
    assert "connection refused" in proc.stderr and proc.stderr.count("\n") == 1


# -- create-project and list-scans -------------------------------------------------------------


def test_create_project_is_idempotent(sandbox: Sandbox) -> None:
    env = server_env(sandbox)
    proc = xio("create-project", "NEWP", "--description", "a test", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"created project NEWP on {sandbox.url}"
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin")) as client:
        assert client.get("/data/projects/NEWP", params={"format": "json"}).status_code == 200
    proc = xio("create-project", "NEWP", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"project": "NEWP", "created": False, "server": sandbox.url}
    proc = xio("create-project", "bad id", env=env)
    assert proc.returncode == 2
    assert "characters XNAT does not accept" in proc.stderr


def test_list_scans_counts_files_per_scan(sandbox: Sandbox, tmp_path: Path) -> None:
    env = server_env(sandbox)
    src = tmp_path / "session"
    assert xio("synth", str(src), "--series", "2", "--instances", "3", "--rows", "16", "--columns",
               "16", env=env).returncode == 0  # fmt: skip
    proc = xio("upload-dicom", "P1", "S1", "E1", str(src), "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(xio("list-scans", "P1", "S1", "E1", "--json", env=env).stdout)
    assert [s["files"] for s in data["scans"]] == [3, 3]
    assert data["files"] == 6
    assert data["bytes"] == sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    old = json.loads(xio("list-scans", "P1", "S1", "E1", "--format", "json", env=env).stdout)
    assert (old["scan_ids"], old["count"]) == (["1", "2"], 2)  # xnatio 0.2's keys
    proc = xio("list-scans", "P1", "S1", "E1", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["scan", "type", "series", "description",
                                                    "files", "size"]  # fmt: skip
    assert proc.stdout.splitlines()[-1].startswith("2 scans, 6 DICOM files, ")
    proc = xio("list-scans", "P1", "S1", "NOPE", env=env)
    assert proc.returncode == 2
    assert "no archived session P1/S1/NOPE" in proc.stderr


# -- journal prune -----------------------------------------------------------------------------


def test_journal_prune_deletes_only_old_journals(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    journals, runs = tmp_path / "xnatio" / "journals", tmp_path / "xnatio" / "runs"
    journals.mkdir(parents=True)
    runs.mkdir()
    old, new, run, other = (
        journals / "P1-E1-old.jsonl",
        journals / "P1-E2-new.jsonl",
        runs / "many-old.jsonl",
        journals / "notes.txt",
    )
    for path in (old, new, run, other):
        path.write_text("{}\n")
    month_ago = time.time() - 31 * 86400
    for path in (old, run, other):
        os.utime(path, (month_ago, month_ago))
    proc = xio("journal", "prune", "--older-than", "30d", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "would delete 2 journals" in proc.stdout and old.exists()
    quiet = xio("journal", "prune", "--older-than", "40d", "-q", env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "") and old.exists()
    proc = xio("journal", "prune", "--older-than", "30d", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(data["removed"]) == sorted([str(old), str(run)]) and data["kept"] == 1
    assert not old.exists() and not run.exists() and new.exists() and other.exists()
    listed = xio("journal", "list", env=env)
    assert str(new) in listed.stdout and "1 journals" in listed.stdout
    proc = xio("journal", "prune", "--older-than", "soon", env=env)
    assert proc.returncode == 2 and "30d, 12h" in proc.stderr


# -- the command line itself -------------------------------------------------------------------


def test_short_version_flag() -> None:
    proc = xio("-V")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"xio {xnatio.__version__}"


@pytest.mark.parametrize("args", [[], ["journal"]])
def test_no_command_prints_the_help_as_it_is(args: list[str]) -> None:
    proc = xio(*args)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("Usage: xio") and "Commands:" in lines
    assert "xio: error" not in proc.stderr


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("uplod-dicom", "did you mean 'upload-dicom'"),
        ("pign", "did you mean 'ping'"),
        ("download-session", "xio does not have this xnatio 0.2 command"),
        ("frobnicate", "No such command 'frobnicate'; see 'xio --help'"),
    ],
)
def test_a_mistyped_command_suggests_one(typed: str, expected: str) -> None:
    proc = xio(typed, "P1")
    assert proc.returncode == 2
    assert expected in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_script_is_produced(shell: str) -> None:
    env = {**os.environ, "_XIO_COMPLETE": f"{shell}_source"}
    proc = subprocess.run([XIO], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "_XIO_COMPLETE" in proc.stdout and "complete" in proc.stdout


def test_completion_lists_commands_and_options() -> None:
    env = {**os.environ, "_XIO_COMPLETE": "bash_complete", "COMP_WORDS": "xio upl",
           "COMP_CWORD": "1"}  # fmt: skip
    proc = subprocess.run([XIO], capture_output=True, text=True, env=env, timeout=60)
    assert "plain,upload-dicom" in proc.stdout and "plain,upload-many" in proc.stdout
    env.update(COMP_WORDS="xio upload-dicom --dicom-p", COMP_CWORD="2")
    proc = subprocess.run([XIO], capture_output=True, text=True, env=env, timeout=60)
    assert "plain,--dicom-port" in proc.stdout


def _all_commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(app, info_name="xio")
    for name in _COMMANDS:
        command = app.get_command(ctx, name)
        assert command is not None
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    return found


ALL_COMMANDS = _all_commands()


@pytest.mark.parametrize(("name", "command"), ALL_COMMANDS, ids=[n for n, _ in ALL_COMMANDS])
def test_every_option_has_help(name: str, command: click.Command) -> None:
    missing = [
        p.opts[0]
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert not missing, f"xio {name}: options without help text: {missing}"
    assert (command.help or "").strip(), f"xio {name} has no help text"
