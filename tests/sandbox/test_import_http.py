"""The import service over real HTTP (docs/xnat-behaviour.md §3): bodies, parameters, responses
and errors."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from xnatio.sandbox import Sandbox

from .conftest import (
    IMPORT,
    dicom_bytes,
    import_params,
    make_dataset,
    make_files,
    tar_bytes,
    zip_bytes,
)

PREARC = r"/data/prearchive/projects/P1/\d{8}_\d{9}/E1"


def _rows(client: httpx.Client, path: str) -> list[dict[str, str]]:
    r = client.get(path, params={"format": "json"})
    assert r.status_code == 200, r.text
    rows: list[dict[str, str]] = r.json()["ResultSet"]["Result"]
    return rows


def _assert_all_strings(body: dict[str, object]) -> None:
    result = body["ResultSet"]
    assert isinstance(result, dict)
    assert isinstance(result["totalRecords"], str)
    for row in result["Result"]:
        assert all(isinstance(v, str) for v in row.values()), row


@pytest.mark.parametrize(
    ("content_type", "build"),
    [
        ("application/x-tar", tar_bytes),
        ("application/x-gtar", lambda f: tar_bytes(f, gz=True)),
        ("application/zip", zip_bytes),
    ],
)
def test_inbody_archives_land_in_one_prearchive_session(
    client: httpx.Client, content_type: str, build: Callable[[dict[str, bytes]], bytes]
) -> None:
    files = make_files(3, series=2)
    r = client.post(
        IMPORT, params=import_params(), content=build(files), headers={"Content-Type": content_type}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/uri-list")
    assert r.text.endswith("\r\n")
    lines = r.text.split("\r\n")[:-1]
    assert len(lines) == 1
    assert re.fullmatch(PREARC, lines[0])
    rows = _rows(client, "/data/prearchive/projects/P1")
    assert [(row["subject"], row["name"], row["status"]) for row in rows] == [
        ("S1", "E1", "RECEIVING")
    ]


def test_format_txt_gives_one_line_without_crlf(client: httpx.Client) -> None:
    r = client.post(
        IMPORT,
        params=import_params(format="txt"),
        content=tar_bytes(make_files(1)),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("/data/prearchive/projects/P1/")
    assert not r.text.endswith("\n")


def test_multipart_upload_uses_the_part_filename(client: httpx.Client) -> None:
    files = make_files(2)
    params = import_params()
    del params["inbody"]
    r = client.post(
        IMPORT,
        params={"import-handler": "DICOM-zip"},
        data={"project": "P1", "subject": "S1", "session": "E1"},  # form fields act as params
        files={"file": ("batch.zip", zip_bytes(files), "application/zip")},
    )
    assert r.status_code == 200, r.text
    assert "/prearchive/projects/P1/" in r.text


def test_multipart_with_two_files_or_upper_case_suffix_is_refused(client: httpx.Client) -> None:
    data = zip_bytes(make_files(1))
    two = client.post(
        IMPORT,
        params={"import-handler": "DICOM-zip", "project": "P1"},
        files=[("a", ("a.zip", data)), ("b", ("b.zip", data))],
    )
    assert two.status_code == 400
    assert "<h3>Importer is limited to one uploaded resource at a time.</h3>" in two.text
    upper = client.post(
        IMPORT, params={"import-handler": "DICOM-zip"}, files={"f": ("BATCH.ZIP", data)}
    )
    assert upper.status_code == 400
    assert "<h3>Unsupported format UNKNOWN</h3>" in upper.text


def test_multipart_with_inbody_is_406(client: httpx.Client) -> None:
    r = client.post(
        IMPORT, params=import_params(), files={"f": ("a.zip", zip_bytes(make_files(1)))}
    )
    assert r.status_code == 406


def test_chunked_zip_streams_but_chunked_tar_is_refused(client: httpx.Client) -> None:
    files = make_files(2)

    def chunks(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    z = client.post(
        IMPORT,
        params=import_params(),
        content=chunks(zip_bytes(files)),
        headers={"Content-Type": "application/zip"},
    )
    assert z.status_code == 200, z.text
    assert "/prearchive/projects/P1/" in z.text
    t = client.post(
        IMPORT,
        params=import_params(),
        content=chunks(tar_bytes(files)),
        headers={"Content-Type": "application/x-tar"},
    )
    assert t.status_code == 400
    assert "request entity size is -1" in t.text


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("application/x-gzip", "Unsupported format UNKNOWN"),
        ("application/octet-stream", "Unsupported format UNKNOWN"),
        ("text/plain", "Unsupported format UNKNOWN"),
    ],
)
def test_unsupported_inbody_types(client: httpx.Client, content_type: str, message: str) -> None:
    r = client.post(
        IMPORT, params=import_params(), content=b"xx", headers={"Content-Type": content_type}
    )
    assert r.status_code == 400
    assert f"<h3>{message}</h3>" in r.text


def test_no_file_and_empty_tar_body(client: httpx.Client) -> None:
    params = import_params()
    del params["inbody"]
    r = client.post(IMPORT, params=params, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    assert "<h3>Unable to identify upload format.</h3>" in r.text
    e = client.post(
        IMPORT, params=import_params(), content=b"", headers={"Content-Type": "application/x-tar"}
    )
    assert e.status_code == 400
    assert "request entity size is 0" in e.text


def test_unknown_handler_is_404_and_get_is_405(client: httpx.Client) -> None:
    r = client.post(
        IMPORT, params=import_params(**{"import-handler": "dicom-zip"}), content=b"x",
        headers={"Content-Type": "application/zip"},
    )  # fmt: skip
    assert r.status_code == 404
    assert "Unknown importer implementation specified: dicom-zip" in r.text
    assert client.get(IMPORT).status_code == 405
    assert client.put(IMPORT, content=b"").status_code == 405


def test_corrupt_archive_and_gzip_labelled_as_tar(client: httpx.Client) -> None:
    bad = client.post(
        IMPORT, params=import_params(), content=b"not a zip at all" * 10,
        headers={"Content-Type": "application/zip"},
    )  # fmt: skip
    assert bad.status_code == 400
    assert "<h3>unable to read data from file</h3>" in bad.text
    gz = client.post(
        IMPORT, params=import_params(), content=tar_bytes(make_files(1), gz=True),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert gz.status_code == 400


def test_empty_archive_gives_200_and_empty_body(client: httpx.Client) -> None:
    r = client.post(
        IMPORT, params=import_params(), content=tar_bytes({}),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 200
    assert r.text == ""


def test_non_dicom_entry_fails_unless_ignore_unparsable(client: httpx.Client) -> None:
    files = {**make_files(2), "notes.txt": b"hello"}
    r = client.post(
        IMPORT, params=import_params(), content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 400
    assert "<h3>" in r.text
    assert "notes.txt" in r.text
    # Files before the failing entry stay (no roll-back).
    assert len(_rows(client, "/data/prearchive/projects/P1")) == 1
    ok = client.post(
        IMPORT, params=import_params(**{"Ignore-Unparsable": "true"}), content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert ok.status_code == 200
    only_bad = client.post(
        IMPORT, params=import_params(**{"Ignore-Unparsable": "true"}),
        content=tar_bytes({"a.txt": b"x"}), headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert only_bad.status_code == 400  # every entry failed: the last error is raised


def test_links_are_refused(client: httpx.Client, sandbox: Sandbox) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        link = tarfile.TarInfo("link.dcm")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    for ignore in ("false", "true"):
        r = client.post(
            IMPORT, params=import_params(**{"Ignore-Unparsable": ignore}),
            content=out.getvalue(), headers={"Content-Type": "application/x-tar"},
        )  # fmt: skip
        assert r.status_code == 400
    assert _rows(client, "/data/prearchive/projects/P1") == []


def test_dotdot_and_absolute_entry_names_are_cleaned(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    """XNAT names a file after its entry with every character outside ``[A-Za-z0-9_.-]`` made
    ``_`` (§4.3): ``../x.dcm`` is stored as ``.._x.dcm`` inside the scan, never above it."""
    study = "1.2.3"
    names = {"../escape.dcm": 1, "/abs.dcm": 2, "a/../../up.dcm": 3, "..": 4}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, number in names.items():
            data = dicom_bytes(make_dataset(study, "1.2.3.4", number))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    r = client.post(
        IMPORT, params=import_params(), content=out.getvalue(),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    [row] = _rows(client, "/data/prearchive/projects/P1")
    stored = {f["name"] for f in sandbox.store.prearchive_files("P1", row["timestamp"], "E1")}
    assert {".._escape.dcm", "_abs.dcm", "a_.._.._up.dcm"} < stored
    assert len(stored) == 4  # '..' names nothing: the template name
    assert not list(sandbox.data_dir.parent.glob("*.dcm"))


def test_nested_archive_is_unpacked(client: httpx.Client) -> None:
    inner = zip_bytes(make_files(2))
    r = client.post(
        IMPORT, params=import_params(), content=tar_bytes({"inner.zip": inner}),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert "/prearchive/projects/P1/" in r.text


def test_upper_case_parameters_and_unknown_project_goes_unassigned(client: httpx.Client) -> None:
    params = {
        "import-handler": "DICOM-zip", "inbody": "true",
        "PROJECT_ID": "NOPE", "SUBJECT_ID": "S9", "EXPT_LABEL": "E9",
    }  # fmt: skip
    r = client.post(
        IMPORT, params=params, content=tar_bytes(make_files(1)),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 200
    assert r.text.startswith("/data/prearchive/projects/Unassigned/")
    assert r.text.rstrip().endswith("/E9")


def test_gradual_dicom_single_file(client: httpx.Client) -> None:
    data = dicom_bytes(make_dataset("1.2.826.0.1.1", "1.2.826.0.1.1.1", 1))
    r = client.post(
        IMPORT,
        params={"PROJECT_ID": "P1", "SUBJECT_ID": "S1", "EXPT_LABEL": "E1"},
        content=data,
        headers={"Content-Type": "application/dicom"},  # no handler: gradual-DICOM chosen
    )
    assert r.status_code == 200, r.text
    assert "/prearchive/projects/P1/" in r.text


def test_dest_commits_to_archive_and_listings(client: httpx.Client) -> None:
    files = make_files(3, series=2)
    r = client.post(
        IMPORT,
        params=import_params(dest="/archive/projects/P1/subjects/S1/experiments/E1"),
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    assert r.text == "/data/archive/projects/P1/subjects/S1/experiments/E1\r\n"
    files_json = client.get(
        "/data/projects/P1/subjects/S1/experiments/E1/scans/ALL/files", params={"format": "json"}
    ).json()
    _assert_all_strings(files_json)
    result = files_json["ResultSet"]["Result"]
    assert len(result) == 6
    assert {row["collection"] for row in result} == {"DICOM"}
    assert all(len(row["digest"]) == 32 for row in result)
    for path in (
        "/data/projects/P1/subjects",
        "/data/projects/P1/experiments",
        "/data/projects/P1/subjects/S1/experiments",
        "/data/projects/P1/subjects/S1/experiments/E1/scans",
        "/data/projects",
    ):
        body = client.get(path, params={"format": "json"}).json()
        _assert_all_strings(body)
        assert body["ResultSet"]["Result"], path
    item = client.get("/data/projects/P1/subjects/S1/experiments/E1", params={"format": "json"})
    assert item.status_code == 200
    assert item.json()["items"][0]["data_fields"]["label"] == "E1"
    assert _rows(client, "/data/prearchive/projects/P1") == []


def test_action_commit_builds_without_aa_and_archives_with_it(client: httpx.Client) -> None:
    build = client.post(
        IMPORT, params=import_params(action="commit"), content=tar_bytes(make_files(1)),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert build.status_code == 200
    assert "/data/prearchive/projects/P1/" in build.text
    arch = client.post(
        IMPORT, params=import_params(action="commit", AA="true", session="E2"),
        content=tar_bytes(make_files(1)), headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert arch.status_code == 200
    assert arch.text == "/data/archive/projects/P1/subjects/S1/experiments/E2\r\n"


@pytest.mark.parametrize("root", ["/archive", "/data/prearchive"])
def test_bare_dest_commits_with_the_parameters(client: httpx.Client, root: str) -> None:
    """``dest=/archive`` (or ``/prearchive``) names no project: XNAT parses it as an empty archive
    (prearchive) URI, so the request commits (archives) and the parameters name the session."""
    r = client.post(
        IMPORT, params=import_params(dest=root), content=tar_bytes(make_files(2)),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    if root == "/archive":
        assert r.text == "/data/archive/projects/P1/subjects/S1/experiments/E1\r\n"
    else:
        assert re.fullmatch(PREARC + "\r\n", r.text)
        assert _rows(client, "/data/prearchive/projects/P1")[0]["status"] == "READY"


def test_bad_dest_is_400(client: httpx.Client) -> None:
    r = client.post(
        IMPORT, params=import_params(dest="/nowhere/x"), content=tar_bytes(make_files(1)),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 400
    assert "<h3>Parameter dest format error</h3>" in r.text


def test_prearchive_commit_then_conflict(client: httpx.Client) -> None:
    files = make_files(2)
    params = import_params(prevent_auto_commit="true")
    uri = client.post(
        IMPORT,
        params=params,
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    ).text.strip()
    built = client.post(uri, params={"action": "commit"})
    assert built.status_code == 200
    assert built.text.strip() == uri
    done = client.post(uri, params={"action": "commit", "AA": "true"})
    assert done.status_code == 301
    assert done.text.strip() == "/data/archive/projects/P1/subjects/S1/experiments/E1"
    # The same files again, then archive without overwrite: 409.
    uri2 = client.post(
        IMPORT,
        params=params,
        content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    ).text.strip()
    src = uri2.removeprefix("/data")
    conflict = client.post("/data/services/archive", params={"src": src})
    assert conflict.status_code == 409
    assert "<h3>" in conflict.text
    ok = client.post("/data/services/archive", params={"src": src, "overwrite": "delete"})
    assert ok.status_code == 200, ok.text
    assert ok.text == "/data/archive/projects/P1/subjects/S1/experiments/E1\r\n"


def test_direct_archive_and_xapi(client: httpx.Client) -> None:
    files = make_files(2)
    r = client.post(
        IMPORT, params=import_params(**{"Direct-Archive": "true"}), content=tar_bytes(files),
        headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    uri = r.text.strip()
    assert uri.startswith("/xapi/direct-archive/P1/")
    status = client.get(uri)
    assert status.status_code == 200
    assert status.json()["status"] == "RECEIVING"
    trigger = client.post(uri)
    assert trigger.status_code == 200, trigger.text
    exp = client.get("/data/projects/P1/subjects/S1/experiments/E1", params={"format": "json"})
    assert exp.status_code == 200
    assert client.get("/xapi/direct-archive/P1/1.2.3/none").status_code == 404


def test_background_ticker_auto_archives(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(ticker_interval=0.05, idle_interval=0.2)
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin")) as client:
        assert client.put("/data/projects/P1/prearchive_code/4").status_code == 200
        assert client.get("/data/projects/P1/prearchive_code").text == "4"
        client.post(
            IMPORT, params=import_params(), content=tar_bytes(make_files(1)),
            headers={"Content-Type": "application/x-tar"},
        )  # fmt: skip
        deadline = time.monotonic() + 10
        path = "/data/projects/P1/subjects/S1/experiments/E1"
        while client.get(path).status_code != 200:
            assert time.monotonic() < deadline, "never auto-archived"
            time.sleep(0.05)


def test_project_subject_experiment_put_and_get(client: httpx.Client) -> None:
    assert client.put("/data/projects/NEW").status_code == 200
    assert client.put("/data/projects/bad%20id").status_code == 417
    created = client.put("/data/projects/NEW/subjects/SUB")
    assert created.status_code == 201
    assert created.text.startswith("XNAT_S")
    again = client.put("/data/projects/NEW/subjects/SUB")
    assert again.status_code == 200
    assert again.text == created.text
    exp = client.put(
        "/data/projects/NEW/subjects/SUB/experiments/EXP", params={"xsiType": "xnat:ctSessionData"}
    )
    assert exp.status_code == 201
    rows = _rows(client, "/data/projects/NEW/experiments")
    assert [(r["label"], r["xsiType"]) for r in rows] == [("EXP", "xnat:ctSessionData")]
    assert client.get("/data/projects/NEW", params={"format": "json"}).status_code == 200
    assert client.get("/data/projects/NONE", params={"format": "json"}).status_code == 404
    assert client.get("/data/projects/NONE/subjects").status_code == 404
    assert client.get("/data/projects/NEW/subjects/SUB").status_code == 200
    assert client.get("/data/projects/NEW/subjects/NOPE").status_code == 404
    assert client.get("/data/nothing/here").status_code == 404
    assert client.get("/data/projects/P1/prearchive_code").text == "0"
    assert client.put("/data/projects/P1/prearchive_code/3").status_code == 400


def test_resource_files_upload_duplicates_and_listing(client: httpx.Client) -> None:
    client.put("/data/projects/P1/subjects/S1")
    client.put("/data/projects/P1/subjects/S1/experiments/E1")
    base = "/data/projects/P1/subjects/S1/experiments/E1/resources/NOTES/files"
    put = client.put(base + "/dir/a.txt", params={"inbody": "true"}, content=b"hello")
    assert put.status_code == 200
    assert put.text == ""
    dup = client.put(base + "/dir/a.txt", params={"inbody": "true"}, content=b"changed")
    assert dup.status_code == 200
    assert json.loads(dup.text) == {"duplicates": ["dir/a.txt"]}
    over = client.put(
        base + "/dir/a.txt", params={"inbody": "true", "overwrite": "true"}, content=b"changed"
    )
    assert over.status_code == 200
    assert over.text == ""
    multi = client.post(base, files={"f": ("b.txt", b"bee")})
    assert multi.status_code == 200
    rows = _rows(client, base)
    assert sorted((r["Name"], r["Size"]) for r in rows) == [("a.txt", "7"), ("b.txt", "3")]
    extract = client.put(
        base + "/bundle.zip", params={"extract": "true"}, content=zip_bytes({"z/c.txt": b"c"}),
        headers={"Content-Type": "application/zip"},
    )  # fmt: skip
    assert extract.status_code == 200
    assert "c.txt" in {r["Name"] for r in _rows(client, base)}
    got = client.get(base + "/dir/a.txt")
    assert got.status_code == 200
    assert got.content == b"changed"
    assert client.get(base + "/nope.txt").status_code == 404
    assert client.get(base + "/nope.txt", params={"accept-not-found": "true"}).status_code == 204
    empty = client.put(base + "/e.txt", params={"inbody": "true"}, content=b"")
    assert empty.status_code == 400
    missing = client.put(
        "/data/projects/P1/subjects/S1/experiments/NOPE/resources/R/files/x.txt",
        params={"inbody": "true"}, content=b"x",
    )  # fmt: skip
    assert missing.status_code == 404
