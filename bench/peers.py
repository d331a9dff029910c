"""Other upload tools the benchmarks compare with, each installed in its own virtual environment.

A peer is a released package from PyPI, pinned, installed by the harness under
``bench/.peers/<name>-<version>/`` (git-ignored) the first time a scenario needs it, so that its
dependencies never mix with xnatio's. The install is not part of any timed run.

Command line (install or check the peers ahead of a benchmark)::

    python -m bench.peers
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PEERS", "PEERS_DIR", "Peer", "ensure", "executable", "main"]

PEERS_DIR = Path(__file__).resolve().parent / ".peers"


@dataclass(frozen=True)
class Peer:
    """A pinned tool from PyPI.

    Attributes
    ----------
    name
        The package, and the command it installs.
    version
        The exact version installed.
    """

    name: str
    version: str

    @property
    def home(self) -> Path:
        """The peer's virtual environment."""
        return PEERS_DIR / f"{self.name}-{self.version}"


#: xnatctl 0.6.0: ``session upload -w N --mode tar`` (REST) and ``session upload-dicom -w N``
#: (C-STORE with pynetdicom), the tool issue 13 compares with.
PEERS: dict[str, Peer] = {p.name: p for p in (Peer("xnatctl", "0.6.0"),)}


def executable(name: str) -> Path:
    """Where a peer's command is (whether or not it is installed yet).

    Parameters
    ----------
    name
        A key of :data:`PEERS`.

    Returns
    -------
    Path
        ``<venv>/bin/<name>``.
    """
    return PEERS[name].home / "bin" / name


def ensure(name: str) -> Path:
    """Install a peer into its own virtual environment unless it is there already.

    Parameters
    ----------
    name
        A key of :data:`PEERS`.

    Returns
    -------
    Path
        The peer's command.

    Raises
    ------
    RuntimeError
        When the install fails (no network to PyPI, for example), with pip's last lines.
    """
    peer = PEERS[name]
    exe = executable(name)
    marker = peer.home / "installed.txt"
    if exe.exists() and marker.exists() and marker.read_text().strip() == peer.version:
        return exe
    venv.EnvBuilder(with_pip=True, clear=True).create(peer.home)
    python = peer.home / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [
            str(python),
            *("-m", "pip", "install", "-q", "--disable-pip-version-check"),
            f"{peer.name}=={peer.version}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0 or not exe.exists():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"pip could not install {peer.name}=={peer.version}: {tail}"[:400])
    marker.write_text(peer.version + "\n")
    return exe


def main(argv: list[str] | None = None) -> int:
    """Install every peer; print where each is.

    Parameters
    ----------
    argv
        Unused (no options).

    Returns
    -------
    int
        0 when every peer is installed, 1 otherwise.
    """
    del argv
    status = 0
    for name in PEERS:
        try:
            print(f"{name}: {ensure(name)}")
        except RuntimeError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
