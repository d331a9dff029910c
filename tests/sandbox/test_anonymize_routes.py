"""The sandbox's anonymisation routes answer as XNAT's do, over real HTTP: XNAT's API
(``/xapi/anonymize/...``) and the config service the XNAT Desktop Client reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from xnatio.sandbox import Sandbox
from xnatio.sandbox.store.anonymize import DEFAULT_SCRIPT

SCRIPT = 'version "6.1"\n(0010,0010) := subject\n'
PROJECT_CONFIG = "/data/projects/P1/config/anon/projects/P1"


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, auth=("admin", "admin")) as c:
        yield c


def test_the_default_and_the_site_script(client: httpx.Client) -> None:
    assert client.get("/xapi/anonymize/default").text == DEFAULT_SCRIPT
    empty = client.get("/xapi/anonymize/site")
    assert (empty.status_code, empty.text) == (200, "")
    assert client.get("/xapi/anonymize/site/enabled").json() is True  # the preference's default
    assert client.get("/data/config/anon/script", params={"format": "json"}).status_code == 404
    assert client.put("/xapi/anonymize/site", content=SCRIPT).status_code == 200
    assert client.get("/xapi/anonymize/site").text == SCRIPT
    row = client.get("/data/config/anon/script", params={"format": "json"}).json()
    (only,) = row["ResultSet"]["Result"]
    assert (only["contents"], only["status"], only["path"]) == (SCRIPT, "enabled", "script")
    # The flag: a JSON content type, the value from ?enable= (default true).
    assert client.put("/xapi/anonymize/site/enabled", params={"enable": "false"}).status_code == 415
    off = client.put("/xapi/anonymize/site/enabled", params={"enable": "false"}, json=None,
                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert off.status_code == 200
    assert client.get("/xapi/anonymize/site/enabled").json() is False
    text = client.get("/data/config/anon/script", params={"contents": "true"})
    assert text.status_code == 404 and "Config not found" in text.text
    gone = client.get(
        "/data/config/anon/script", params={"contents": "true", "accept-not-found": "true"}
    )
    assert gone.status_code == 204


def test_a_project_script(client: httpx.Client) -> None:
    assert client.get("/xapi/anonymize/projects/P1").status_code == 204
    assert client.get("/xapi/anonymize/projects/P1/enabled").json() is False
    assert client.get(PROJECT_CONFIG, params={"format": "json"}).status_code == 404
    json_type = {"Content-Type": "application/json"}
    never = client.put("/xapi/anonymize/projects/P1/enabled", headers=json_type)
    assert never.status_code == 500 and "Couldn't find the site configuration" in never.text
    assert client.put(PROJECT_CONFIG, content=SCRIPT).status_code == 201
    assert client.put(PROJECT_CONFIG, content=SCRIPT).status_code == 200  # unchanged
    got = client.get("/xapi/anonymize/projects/P1")
    assert (got.status_code, got.text) == (200, SCRIPT)
    assert client.put(PROJECT_CONFIG, params={"status": "disabled"}).status_code == 200
    assert client.get("/xapi/anonymize/projects/P1").status_code == 204  # disabled: 204 too
    rows = client.get(PROJECT_CONFIG, params={"format": "json"}).json()["ResultSet"]["Result"]
    assert [(r["status"], r["path"], r["project"]) for r in rows] == [
        ("disabled", "/projects/P1", "P1")
    ]
    bad = client.put(PROJECT_CONFIG, params={"status": "maybe"})
    assert bad.status_code == 400 and "Only valid values" in bad.text
    on = client.put("/xapi/anonymize/projects/P1/enabled", params={"enable": "true"},
                    headers=json_type)  # fmt: skip
    assert on.status_code == 200
    assert client.get("/xapi/anonymize/projects/P1/enabled").json() is True
    assert client.get("/xapi/anonymize/projects/NOPE").status_code == 404


def test_scripts_outlive_a_restart(make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    first = make_sandbox(data_dir=tmp_path / "data")
    with httpx.Client(base_url=first.url, auth=("admin", "admin")) as c:
        c.put("/xapi/anonymize/projects/P1", content=SCRIPT).raise_for_status()
    first.stop()
    again = make_sandbox(data_dir=tmp_path / "data")
    with httpx.Client(base_url=again.url, auth=("admin", "admin")) as c:
        assert c.get("/xapi/anonymize/projects/P1").text == SCRIPT
