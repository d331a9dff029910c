"""Where settings come from: profiles, --env NAME or PATH, and the documented precedence.

flags > --profile (XNATIO_PROFILE) > environment > .env > default_profile > ~/.netrc, and a
profile's account goes only to its own server. The precedence is checked setting by setting with
``resolve_settings`` (pure logic over files in a temporary folder), then through the real command
line: ``xio config show --json`` and ``xio ping`` against the sandbox.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli_run import run_process
from xnatio.config import Resolution, resolve_settings
from xnatio.errors import InputError
from xnatio.profiles import read_profiles
from xnatio.sandbox import Sandbox

LAB = """
default_profile = "lab"

[profiles.lab]
server = "https://lab.example.org"
username = "alice"
password = "lab-secret"
verify_tls = "/etc/lab-ca.pem"
dicom_port = 11112
dicom_called_aet = "LABSCP"

[profiles.other]
server = "https://other.example.org/xnat/"
username = "bob"
password = "other-secret"
"""


def write_config(folder: Path, text: str = LAB) -> Path:
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def resolve(
    tmp_path: Path, environ: dict[str, str] | None = None, **flags: str | None
) -> Resolution:
    env = {"HOME": str(tmp_path / "home"), **(environ or {})}
    return resolve_settings(
        environ=env, cwd=tmp_path, profiles=read_profiles(tmp_path / "config.toml"), **flags
    )


def test_the_default_profile_applies_when_nothing_else_says(tmp_path: Path) -> None:
    write_config(tmp_path)
    s = resolve(tmp_path)
    assert (s.server, s.username, s.password) == ("https://lab.example.org", "alice", "lab-secret")
    assert s.verify_tls == "/etc/lab-ca.pem"
    assert s.sources["server"] == "profile lab (default)"
    assert s.dicom == {"dicom_port": 11112, "dicom_called_aet": "LABSCP"}


def test_environment_and_dotenv_rank_above_the_default_profile(tmp_path: Path) -> None:
    write_config(tmp_path)
    (tmp_path / ".env").write_text("XNAT_USERNAME=carol\nXNAT_SERVER=https://lab.example.org\n")
    s = resolve(tmp_path, {"XNAT_USERNAME": "dave"})
    assert s.username == "dave" and s.sources["username"] == "environment"
    assert s.sources["server"] == str(tmp_path / ".env")
    # The .env names the profile's own server, so the profile still gives the password.
    assert s.password == "lab-secret" and s.sources["password"] == "profile lab (default)"


def test_a_profile_never_gives_its_password_to_another_server(tmp_path: Path) -> None:
    write_config(tmp_path)
    s = resolve(tmp_path, {"XNAT_SERVER": "https://elsewhere.example.org"})
    assert s.server == "https://elsewhere.example.org"
    assert s.username is None and s.password is None
    assert s.verify_tls is True  # nor its CA bundle
    assert s.profile is None and s.dicom == {}
    with pytest.raises(InputError, match="no username for https://elsewhere"):
        s.config()


def test_an_explicit_profile_ranks_above_the_environment(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"XNAT_SERVER": "https://env.example.org", "XNAT_PASSWORD": "env-secret"}
    s = resolve(tmp_path, env, profile="other")
    assert s.server == "https://other.example.org/xnat"  # normalised
    assert (s.username, s.password) == ("bob", "other-secret")
    assert s.sources["password"] == "profile other"
    # XNATIO_PROFILE chooses the same way; a flag still wins over the profile.
    s = resolve(tmp_path, {**env, "XNATIO_PROFILE": "other"}, username="erin")
    assert (s.server, s.username) == ("https://other.example.org/xnat", "erin")
    assert s.sources["username"] == "command line"


def test_flags_win_and_a_profile_without_password_falls_back(tmp_path: Path) -> None:
    write_config(tmp_path, '[profiles.p]\nserver = "https://p.example.org"\nusername = "frank"\n')
    s = resolve(tmp_path, {"XNAT_PASSWORD": "from-env"}, profile="p")
    assert (s.username, s.password) == ("frank", "from-env")
    s = resolve(tmp_path, profile="p", server="https://flag.example.org")
    assert s.server == "https://flag.example.org" and s.username is None


def test_netrc_comes_last(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine lab.example.org login alice password netrc-secret\n")
    netrc.chmod(0o600)
    write_config(tmp_path, '[profiles.lab]\nserver = "https://lab.example.org"\n')
    s = resolve(tmp_path, profile="lab")
    assert (s.username, s.password) == ("alice", "netrc-secret")
    assert s.sources["password"] == "~/.netrc"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[profiles.x]\nurl = "https://x"\n', "unknown key 'url'"),
        ('[profiles.x]\nserver = "https://x"\ndicom_port = "104"\n', "dicom_port must be int"),
        ('[profiles.x]\nserver = "https://x"\ndicom_port = true\n', "dicom_port must be int"),
        ('[profiles.x]\nusername = "a"\n', "has no server"),
        ('default_profile = "y"\n[profiles.x]\nserver = "https://x"\n', "names no profile"),
        ("[profiles.x\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_input_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_profiles(write_config(tmp_path, text))


def test_env_takes_a_name_or_a_path(tmp_path: Path) -> None:
    (tmp_path / ".env.lab").write_text("XNAT_SERVER=https://named.example.org\n")
    (tmp_path / "prod.env").write_text("XNAT_SERVER=https://plain.example.org\n")
    sub = tmp_path / "envs"
    sub.mkdir()
    (sub / "dev").write_text("XNAT_SERVER=https://path.example.org\n")
    assert resolve(tmp_path, env_name="lab").server == "https://named.example.org"
    assert resolve(tmp_path, env_name="prod.env").server == "https://plain.example.org"
    assert resolve(tmp_path, env_name="envs/dev").server == "https://path.example.org"
    assert resolve(tmp_path, env_name=str(sub / "dev")).server == "https://path.example.org"
    with pytest.raises(InputError, match="neither"):
        resolve(tmp_path, env_name="missing")
    with pytest.raises(InputError, match="is not a file"):
        resolve(tmp_path, env_name="./missing.env")


# -- through the command line ------------------------------------------------------------------


def xio(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_process(*args, env=env, cwd=cwd, stdin=stdin, timeout=60)


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XNAT_", "XNATIO_"))}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return env


def test_config_show_names_each_source_and_never_a_password(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    folder = tmp_path / "xdg" / "xnatio"
    folder.mkdir(parents=True)
    write_config(folder)
    proc = xio("config", "list", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lab-secret" not in proc.stdout + proc.stderr
    assert re.search(
        r"^\*\s+lab\s+https://lab.example.org\s+alice\s+password set$", proc.stdout, re.M
    )
    env["XNAT_USERNAME"] = "dave"
    proc = xio("config", "show", "--json", env=env, cwd=tmp_path)
    shown = json.loads(proc.stdout)
    assert shown["profile"] == "lab"
    assert shown["server"] == {
        "value": "https://lab.example.org",
        "source": "profile lab (default)",
    }
    assert shown["username"] == {"value": "dave", "source": "environment"}
    assert shown["password"] == {"value": "set", "source": "profile lab (default)"}
    for args in (["config", "show"], ["config", "show", "other"], ["config", "list", "--json"]):
        proc = xio(*args, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "secret" not in proc.stdout + proc.stderr, args
    proc = xio("config", "path", env=env, cwd=tmp_path)
    assert proc.stdout.strip() == str(folder / "config.toml")


def test_a_profile_reaches_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    folder = tmp_path / "xdg" / "xnatio"
    folder.mkdir(parents=True)
    write_config(
        folder,
        f'[profiles.sb]\nserver = "{sandbox.url}"\nusername = "admin"\npassword = "admin"\n'
        '[profiles.wrong]\nserver = "http://127.0.0.1:9"\nusername = "x"\npassword = "y"\n',
    )
    proc = xio("ping", "--profile", "sb", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"OK: {sandbox.url} is XNAT ")
    # The environment does not override the profile named on the command line...
    env["XNAT_SERVER"] = "http://127.0.0.1:9"
    proc = xio("whoami", "--profile", "sb", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # ...but without --profile it is the environment's server, and that one is down (exit 3).
    env.pop("XNAT_SERVER")
    env["XNATIO_PROFILE"] = "wrong"
    proc = xio("ping", env=env, cwd=tmp_path)
    assert proc.returncode == 3
    assert "cannot connect to http://127.0.0.1:9" in proc.stderr
    proc = xio("ping", "--profile", "nope", env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "no profile 'nope'" in proc.stderr and "sb, wrong" in proc.stderr


def test_env_path_works_as_in_xnatio_02(sandbox: Sandbox, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "xnat.env").write_text(
        f"XNAT_SERVER={sandbox.url}\nXNAT_USERNAME=admin\nXNAT_PASSWORD=admin\n"
    )
    (secrets / "xnat.env").chmod(0o600)
    proc = xio("whoami", "--env", str(secrets / "xnat.env"), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("admin on ")
    proc = xio("whoami", "--env", "secrets/xnat.env", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_config_file_with_a_password_that_others_can_read_warns(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env = clean_env(tmp_path)
    folder = tmp_path / "xdg" / "xnatio"
    folder.mkdir(parents=True)
    path = write_config(
        folder,
        f'default_profile = "sb"\n[profiles.sb]\nserver = "{sandbox.url}"\n'
        'username = "admin"\npassword = "admin"\n',
    )
    path.chmod(0o644)
    warning = f"{path} holds a password and is readable by other users; run: chmod 600 {path}"
    for args in (["config", "list"], ["whoami"]):
        proc = xio(*args, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert warning in proc.stderr, args
    path.chmod(0o600)
    assert xio("whoami", env=env, cwd=tmp_path).stderr == ""
