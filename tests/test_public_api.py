"""The public API is complete, documented in code, and listed in docs/api.md.

The public surface is one ``__all__``, at the package root; ``xnatio.uploaders`` keeps the seed's
import path and may only re-export names of the root. Every name in ``__all__`` must exist and
carry a docstring; public
functions use numpydoc sections (``Parameters`` when they take arguments, ``Returns`` when they
return something); and docs/api.md has a section for the name that mentions every parameter of its
signature, so adding a keyword argument without documenting it fails here.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"

PUBLIC_MODULES = ["xnatio"]
# Earlier import paths that stay, as subsets of the root.
COMPAT_MODULES = ["xnatio.uploaders"]


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return list(module.__all__)


PUBLIC = [(m, n) for m in PUBLIC_MODULES for n in public_names(m)]
IDS = [f"{m}.{n}" for m, n in PUBLIC]


def _obj(module_name: str, name: str) -> Any:
    return getattr(importlib.import_module(module_name), name)


def _sections(doc: str) -> set[str]:
    """Numpydoc section titles in a docstring (a title line followed by a dashed line)."""
    lines = [ln.strip() for ln in doc.splitlines()]
    return {
        lines[i]
        for i in range(len(lines) - 1)
        if lines[i] and set(lines[i + 1]) == {"-"} and len(lines[i + 1]) >= len(lines[i])
    }


def api_section(name: str) -> str:
    """The text of docs/api.md under the heading that names ``name``, up to the next heading."""
    lines = API_DOC.read_text(encoding="utf-8").splitlines()
    heading = re.compile(rf"^(#+)\s+`{re.escape(name)}`\s*$")
    for i, line in enumerate(lines):
        m = heading.match(line)
        if m is None:
            continue
        level = len(m.group(1))
        end = i + 1
        while end < len(lines):
            other = re.match(r"^(#+)\s", lines[end])
            if other is not None and len(other.group(1)) <= level:
                break
            end += 1
        return "\n".join(lines[i:end])
    return ""


def test_public_modules_declare_all() -> None:
    """The root and the compatibility module list their public names explicitly."""
    for module_name in PUBLIC_MODULES + COMPAT_MODULES:
        module = importlib.import_module(module_name)
        assert isinstance(getattr(module, "__all__", None), list), module_name
        assert len(set(module.__all__)) == len(module.__all__), f"{module_name}: duplicates"


@pytest.mark.parametrize("module_name", COMPAT_MODULES)
def test_compat_modules_reexport_the_root(module_name: str) -> None:
    """An older import path offers the very objects of the root, and nothing else."""
    import xnatio

    module = importlib.import_module(module_name)
    extra = [n for n in module.__all__ if n not in xnatio.__all__]
    assert not extra, f"{module_name} exports names the root does not: {extra}"
    for name in module.__all__:
        assert getattr(module, name) is getattr(xnatio, name), f"{module_name}.{name}"


def test_import_xnatio_loads_no_upload_machinery() -> None:
    """``import xnatio`` stays cheap: the heavy modules load on first use of a name."""
    code = (
        "import sys, xnatio; heavy = [m for m in ('pydicom', 'numpy', 'httpx', 'xnatio.upload') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_an_upload_without_anonymize_loads_no_engine(tmp_path: Path) -> None:
    """A plain upload's whole path (both transports, the command line) leaves the
    de-identification engine, pydicom and numpy unimported: start-up time (docs/benchmarks.md)."""
    code = (
        "import sys\n"
        "import xnatio.cli.app, xnatio.cli.upload_dicom, xnatio.cli.dicom_store_cli\n"
        "import xnatio.upload.rest_flow, xnatio.upload.dicom_flow\n"
        "from xnatio.upload.anonymize import as_anonymization\n"
        "assert as_anonymization('none') is None and as_anonymization(None) is None\n"
        "heavy = ('pydicom', 'numpy', 'xnatio.anonymize.engine', 'xnatio.anonymize.editor')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize(("module_name", "name"), PUBLIC, ids=IDS)
def test_name_exists_and_has_a_docstring(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, name), f"{module_name}.__all__ lists {name!r}, which does not exist"
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        doc = inspect.getdoc(obj) or ""
        # A class inheriting its parent's docstring does not document itself.
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        assert own and doc.strip(), f"{module_name}.{name} has no docstring"


def _numpydoc_cases() -> list[Any]:
    cases = []
    for module_name, name in PUBLIC:
        obj = _obj(module_name, name)
        if not inspect.isfunction(obj):
            continue
        sig = inspect.signature(obj)
        needed = []
        if sig.parameters:
            needed.append("Parameters")
        if sig.return_annotation not in (inspect.Signature.empty, None, "None"):
            needed.append("Returns")
        for section in needed:
            qual = f"{module_name}.{name}"
            cases.append(pytest.param(qual, section, id=f"{qual}-{section}"))
    return cases


@pytest.mark.parametrize(("qualname", "section"), _numpydoc_cases())
def test_functions_have_numpydoc_sections(qualname: str, section: str) -> None:
    module_name, _, name = qualname.rpartition(".")
    doc = inspect.getdoc(_obj(module_name, name)) or ""
    assert section in _sections(doc), f"{qualname}: docstring has no {section!r} section"


@pytest.mark.parametrize(("module_name", "name"), PUBLIC, ids=IDS)
def test_name_is_documented_in_api_md(module_name: str, name: str) -> None:
    section = api_section(name)
    assert section, f"docs/api.md has no heading for `{name}` ({module_name})"
    obj = _obj(module_name, name)
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return
    undocumented = [
        p
        for p in params
        if p not in ("self", "args", "kwargs") and not re.search(rf"\b{p}\b", section)
    ]
    assert not undocumented, f"docs/api.md, `{name}`: parameters not mentioned: {undocumented}"


def test_api_md_documents_no_stale_names() -> None:
    """Every name with a heading in docs/api.md is public today."""
    text = API_DOC.read_text(encoding="utf-8")
    documented = re.findall(r"^###\s+`([^`]+)`\s*$", text, flags=re.MULTILINE)
    public = {n for _, n in PUBLIC}
    stale = [n for n in documented if n not in public]
    assert not stale, f"docs/api.md documents names that are not public: {stale}"


def test_every_public_module_has_a_heading() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    for module_name in PUBLIC_MODULES:
        assert re.search(rf"^##\s+`{re.escape(module_name)}`\s*$", text, flags=re.MULTILINE), (
            module_name
        )
