"""Request-body parsing units: chunked bodies, drop points, multipart forms, archive entries."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from xnatio.sandbox.bodies import (
    BodyReader,
    ConnectionLostError,
    UploadError,
    archive_format,
    iter_archive,
    read_multipart,
)

from .conftest import tar_bytes


def _chunked(data: bytes, size: int = 5) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        part = data[i : i + size]
        out += f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n"
    return out + b"0\r\nTrailer: x\r\n\r\nNEXT"


def test_chunked_body_is_decoded_and_stops_at_its_end() -> None:
    raw = io.BytesIO(_chunked(b"hello chunked world"))
    reader = BodyReader(raw, None)
    assert reader.read() == b"hello chunked world"
    assert reader.at_eof
    assert raw.read() == b"NEXT"  # the next request on the connection is untouched


def test_plain_body_reads_exactly_content_length() -> None:
    raw = io.BytesIO(b"abcdefNEXT")
    reader = BodyReader(raw, 6)
    assert reader.read(4) == b"abcd"
    assert reader.read(100) == b"ef"
    assert reader.read(1) == b""
    assert raw.read() == b"NEXT"


def test_short_body_is_a_lost_connection() -> None:
    reader = BodyReader(io.BytesIO(b"abc"), 10)
    with pytest.raises(ConnectionLostError):
        reader.read()
    assert reader.lost


def test_drop_point_stops_reading() -> None:
    reader = BodyReader(io.BytesIO(b"x" * 100), 100, drop_after=30)
    assert len(reader.read(50)) == 30
    with pytest.raises(ConnectionLostError):
        reader.read(50)
    assert reader.dropped


def test_drain_respects_limit() -> None:
    reader = BodyReader(io.BytesIO(b"x" * (3 << 20)), 3 << 20)
    assert not reader.drain(limit=1)
    assert reader.drain()
    assert reader.at_eof


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    out = b"preamble\r\n"
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_multipart_fields_and_files(tmp_path: Path) -> None:
    payload = b"\r\n--Xy almost a boundary\r\n" * 1000
    body = _multipart([("project", None, b"P1"), ("file", "a b.zip", payload)])
    reader = BodyReader(io.BytesIO(body), len(body))
    form = read_multipart(reader, "multipart/form-data; boundary=XyZ", tmp_path)
    assert form.fields == {"project": ["P1"]}
    assert [f.filename for f in form.files] == ["a b.zip"]
    assert form.files[0].path.read_bytes() == payload
    assert reader.at_eof


def test_multipart_errors(tmp_path: Path) -> None:
    body = _multipart([("file", "", b"x")])
    with pytest.raises(UploadError, match="must contain the file name"):
        read_multipart(
            BodyReader(io.BytesIO(body), len(body)), "multipart/form-data; boundary=XyZ", tmp_path
        )
    cut = _multipart([("file", "a.zip", b"x" * 100)])[:-20]
    with pytest.raises(UploadError, match="ended early"):
        read_multipart(
            BodyReader(io.BytesIO(cut), len(cut)), "multipart/form-data; boundary=XyZ", tmp_path
        )
    assert list(tmp_path.iterdir()) == []  # spooled parts are removed on failure
    with pytest.raises(UploadError, match="boundary"):
        read_multipart(BodyReader(io.BytesIO(b""), 0), "multipart/form-data", tmp_path)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.tar", "TAR"), ("a.xar", "TAR"), ("a.tgz", "TGZ"), ("a.tar.gz", "TGZ"), ("a.zip", "ZIP"),
     ("a.zar", "ZIP"), ("a.gz", "GZ"), ("A.ZIP", "UNKNOWN"), ("upload", "UNKNOWN")],
)  # fmt: skip
def test_archive_format_is_case_sensitive(name: str, fmt: str) -> None:
    assert archive_format(name) == fmt


def test_zip_entries_refuse_links_not_names(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("ok/a.dcm", b"a")
        archive.writestr("../up.dcm", b"b")
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("dir/", b"")
    entries = [
        (e.name, e.error, e.stream.read() if e.stream else None)
        for e in iter_archive(io.BytesIO(out.getvalue()), "ZIP", tmp_path)
    ]
    assert entries[0] == ("ok/a.dcm", None, b"a")
    assert entries[1] == ("../up.dcm", None, b"b")  # the name is cleaned where it is used
    assert entries[2][1] == "link entries are not accepted"
    assert len(entries) == 3  # the directory entry is skipped


def test_nested_gz_is_unsupported(tmp_path: Path) -> None:
    body = tar_bytes({"x.gz": b"123"})
    with pytest.raises(UploadError, match="Unsupported format GZ"):
        list(iter_archive(io.BytesIO(body), "TAR", tmp_path))
