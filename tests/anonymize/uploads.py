"""Helpers for the upload tests of de-identification: a session with PHI, real scripts, and the
stored files read back.

The scripts are XNAT's default site script (as XNAT ships it) and scripts written here in the
style of public XNAT deployments' project scripts: hash the UIDs, blank or remove the patient's
and the referring physician's details, remove a vendor's private block by its creator.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.anonymize.helpers import dataset, encode, flat
from xnatio.sandbox import Sandbox

#: XNAT's default site script (web/src/main/resources/META-INF/xnat/defaults/id.das in XNAT).
SITE_SCRIPT = (
    'version "6.1"\n'
    'project != "Unassigned" ? (0008,1030) := project\n'
    "(0010,0010) := subject\n"
    "(0010,0020) := session\n"
)

#: A multi-site study's project script, in the style of public deployments.
PROJECT_SCRIPT = """version "6.1"
// Study XYZ: pseudonymise at the site, keep what the analysis needs
(0008,0050) := ""                              // Accession Number
(0008,0080) := "SITE-A"                        // Institution Name
(0008,0090) := ""                              // Referring Physician's Name
-(0010,0030)                                   // Patient's Birth Date
(0010,0040) ?= "O"                             // Patient's Sex, only where present
(0020,000D) := hashUID[(0020,000D)]
(0020,000E) := hashUID[(0020,000E)]
(0008,0018) := hashUID[(0008,0018)]
(0020,0052) := hashUID[(0020,0052)]
hashUIDList[*/(0008,1155)]                     // references inside sequences
-(0010,1002)                                   // Other Patient IDs Sequence
-(0019,{SIEMENS MR HEADER}XX)
(0008,103E) ~ "t1.*" ? (0008,103E) := uppercase[(0008,103E)]
"""

#: A local script of a sending site (applied before the server's scripts).
LOCAL_SCRIPT = """version "6.1"
// site-local: never let names or dates of birth leave the hospital
(0010,0010) := subject
(0010,0020) := session
(0010,0030) := ""
(0008,0090) := "ANON"
(0020,000D) := hashUID[(0020,000D)]
(0020,000E) := hashUID[(0020,000E)]
(0008,0018) := hashUID[(0008,0018)]
removeAllPrivateTags
"""


def xnat_hash(value: str) -> str:
    """DicomEdit's hashUID from its definition (independent of the engine): a name-based SHA-1
    UUID, no namespace, as a 2.25 UID."""
    digest = hashlib.sha1(value.encode()).digest()[:16]
    return "2.25." + str(uuid.UUID(bytes=digest, version=5).int)


def write_session(folder: Path, series: int = 2, instances: int = 3) -> list[Path]:
    """A session with a patient's details, private tags and nested references, in two series;
    the last file is implicit VR little endian, the others explicit."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    total = series * instances
    for s in range(1, series + 1):
        for i in range(1, instances + 1):
            n = len(paths) + 1
            ds = dataset(
                SOPInstanceUID=f"1.2.826.0.1.3680043.2.1125.7.{s}.{i}",
                SeriesInstanceUID=f"1.2.826.0.1.3680043.2.1125.7.{s}",
                SeriesNumber=str(s),
                InstanceNumber=str(i),
                SeriesDescription=f"t1_mprage_{s}" if s == 1 else f"dwi_{s}",
            )
            syntax = ImplicitVRLittleEndian if n == total else ExplicitVRLittleEndian
            path = folder / f"Doe_Jane/{s:03d}/{i:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(ds, syntax))
            paths.append(path)
    return paths


def put_scripts(sb: Sandbox, site: str | None = None, project: str | None = None) -> None:
    """Set the sandbox's site and project P1 scripts through XNAT's API."""
    with httpx.Client(base_url=sb.url, auth=("admin", "admin")) as c:
        if site is not None:
            c.put("/xapi/anonymize/site", content=site).raise_for_status()
        if project is not None:
            c.put("/xapi/anonymize/projects/P1", content=project).raise_for_status()


def archived(sb: Sandbox, session: str, project: str = "P1") -> dict[str, Path]:
    """The archived session's DICOM files by SOP Instance UID."""
    root = sb.store.data_dir / "archive" / project / "arc001" / session
    found = {}
    for p in sorted(root.rglob("*.dcm")):
        found[str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)] = p
    return found


def elements(ds: Dataset, drop: tuple[str, ...] = ()) -> dict[str, object]:
    """Every element at every depth (:func:`flat`), without those whose path starts with one of
    ``drop`` (hex ``GGGGEEEE`` tags)."""
    return {k: v for k, v in flat(ds).items() if not k.startswith(drop)}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def same_except(a: Dataset, b: Dataset, drop: tuple[str, ...] = ()) -> Mapping[str, object]:
    """The elements where ``a`` and ``b`` differ (path -> (a's, b's)), ``drop`` left out."""
    ea, eb = elements(a, drop), elements(b, drop)
    return {k: (ea.get(k), eb.get(k)) for k in ea.keys() | eb.keys() if ea.get(k) != eb.get(k)}
