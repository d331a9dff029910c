"""docs/install.md's promise: a wheel built with ``python -m build`` installs into a clean virtual
environment (dependencies from the package index) and ``xio demo`` runs there end to end.

The source is copied first, so the build writes nothing into the working tree. About 45 s here,
most of it installing the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("build", reason="the dev extra installs build")


@pytest.mark.slow
def test_the_wheel_installs_into_a_clean_venv_and_the_demo_runs(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheels = list(dist.glob("xnatio-*-py3-none-any.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(bindir / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
        check=True,
        capture_output=True,
        timeout=600,
        env=clean,
    )
    # The installed package, not the working tree's: run from an empty folder.
    run = tmp_path / "run"
    run.mkdir()
    where = subprocess.run(
        [str(bindir / "python"), "-c", "import xnatio; print(xnatio.__file__)"],
        capture_output=True, text=True, cwd=run, env=clean, check=True, timeout=60,
    )  # fmt: skip
    assert str(env_dir) in where.stdout
    demo = subprocess.run(
        [str(bindir / "xio"), "demo", "-q"],
        capture_output=True, text=True, cwd=run, env=clean, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "REST:     OK  300/300 files" in demo.stdout, demo.stdout
    assert "C-STORE:  OK  300/300 instances" in demo.stdout, demo.stdout
