"""Authentication as XNAT does it (docs/xnat-behaviour.md §2): Basic, JSESSION, idle expiry,
401 pages, lockout."""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable

import httpx
import pytest

from xnatio.sandbox import Sandbox, SandboxConfig


def test_jsession_get_returns_session_id_and_cookie(client: httpx.Client) -> None:
    r = client.get("/data/JSESSION")
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9A-F]{32}", r.text)
    assert r.cookies["JSESSIONID"] == r.text
    assert "SESSION_EXPIRATION_TIME" in r.headers.get_list("set-cookie")[-1]


def test_jsession_post_and_csrf_form(client: httpx.Client) -> None:
    r = client.post("/data/JSESSION", params={"CSRF": "true"})
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9A-F]{32}; XNAT_CSRF=[0-9a-f]+", r.text)


def test_cookie_alone_authenticates_and_delete_ends_it(sandbox: Sandbox) -> None:
    sid = httpx.get(sandbox.url + "/data/JSESSION", auth=("admin", "admin")).text
    with httpx.Client(base_url=sandbox.url, cookies={"JSESSIONID": sid}) as c:
        r = c.get("/data/auth")
        assert r.status_code == 200
        assert r.text == "User 'admin' is logged in"
        assert c.get("/data/JSESSION").text == sid  # same session while it lives
        assert c.delete("/data/JSESSION").status_code == 200
        assert c.get("/data/auth").status_code == 401


def test_session_expires_after_idle_timeout(make_sandbox: Callable[..., Sandbox]) -> None:
    now = [1000.0]
    sandbox = make_sandbox(session_timeout=5.0)
    sandbox.auth._clock = lambda: now[0]  # drive the idle clock without sleeping
    sid = httpx.get(sandbox.url + "/data/JSESSION", auth=("admin", "admin")).text
    cookies = {"JSESSIONID": sid}
    now[0] += 4.0
    assert httpx.get(sandbox.url + "/data/auth", cookies=cookies).status_code == 200
    now[0] += 4.0  # 4 s since the last use: still alive (idle, not absolute, timeout)
    assert httpx.get(sandbox.url + "/data/auth", cookies=cookies).status_code == 200
    now[0] += 5.0
    r = httpx.get(sandbox.url + "/data/auth", cookies=cookies)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_bad_password_is_401_with_html_body(client: httpx.Client) -> None:
    r = client.get("/data/projects", auth=("admin", "wrong"))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text
    assert "login attempt failed" in r.text
    assert "wrong" not in r.text


def test_no_credentials_non_browser_gets_challenge(sandbox: Sandbox) -> None:
    r = httpx.get(sandbox.url + "/data/projects")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_no_credentials_browser_is_redirected_to_login(sandbox: Sandbox) -> None:
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    r = httpx.get(sandbox.url + "/data/projects", headers=headers)
    assert r.status_code == 302
    followed = httpx.get(sandbox.url + "/data/projects", headers=headers, follow_redirects=True)
    assert followed.status_code == 200
    assert "<html" in followed.text


def test_password_with_colon_is_refused_as_invalid_token(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(password="a:b")
    r = httpx.get(sandbox.url + "/data/auth", auth=("admin", "a:b"))
    assert r.status_code == 401
    assert "separated by the" in r.text


def test_malformed_basic_header(sandbox: Sandbox) -> None:
    r = httpx.get(sandbox.url + "/data/auth", headers={"Authorization": "Basic !!!"})
    assert r.status_code == 401


def test_lockout_after_repeated_failures(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(max_failed_logins=3, lockout_seconds=3600)
    for _ in range(2):
        assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "bad")).status_code == 401
    assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "admin")).status_code == 200
    for _ in range(3):  # the success above reset the count; three in a row lock
        assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "bad")).status_code == 401
    assert sandbox.auth.is_locked("admin")
    assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "admin")).status_code == 401


def test_lockout_ends_after_its_duration(make_sandbox: Callable[..., Sandbox]) -> None:
    now = [0.0]
    sandbox = make_sandbox(max_failed_logins=1, lockout_seconds=60)
    sandbox.auth._clock = lambda: now[0]
    assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "bad")).status_code == 401
    assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "admin")).status_code == 401
    now[0] += 61
    assert httpx.get(sandbox.url + "/data/auth", auth=("admin", "admin")).status_code == 200


def test_services_auth_form_login(sandbox: Sandbox) -> None:
    r = httpx.put(
        sandbox.url + "/data/services/auth", data={"username": "admin", "password": "admin"}
    )
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9A-F]{32}", r.text)
    bad = httpx.put(
        sandbox.url + "/data/services/auth", data={"username": "admin", "password": "x"}
    )
    assert bad.status_code == 401


def test_rest_prefix_and_archive_mount_are_equivalent(client: httpx.Client) -> None:
    a = client.get("/data/projects", params={"format": "json"}).json()
    b = client.get("/REST/projects", params={"format": "json"}).json()
    assert a == b
    assert client.put("/data/projects/P1/subjects/S1").status_code in (200, 201)
    c = client.get("/data/archive/projects/P1/subjects", params={"format": "json"}).json()
    assert [r["label"] for r in c["ResultSet"]["Result"]] == ["S1"]


def test_csrf_enforced_only_for_browser_with_cookie(sandbox: Sandbox) -> None:
    body = httpx.get(
        sandbox.url + "/data/JSESSION", params={"CSRF": "true"}, auth=("admin", "admin")
    ).text
    sid, token = body.split("; XNAT_CSRF=")
    cookies = {"JSESSIONID": sid}
    browser = {"User-Agent": "Mozilla/5.0"}
    url = sandbox.url + "/data/projects/P2"
    assert httpx.put(url, cookies=cookies, headers=browser).status_code == 403
    assert (
        httpx.put(url, cookies=cookies, headers=browser, params={"XNAT_CSRF": token}).status_code
        == 200
    )
    assert httpx.put(sandbox.url + "/data/projects/P3", cookies=cookies).status_code == 200


def test_expire_sessions_fault(sandbox: Sandbox) -> None:
    sid = httpx.get(sandbox.url + "/data/JSESSION", auth=("admin", "admin")).text
    sandbox.faults.expire_sessions()
    assert httpx.get(sandbox.url + "/data/auth", cookies={"JSESSIONID": sid}).status_code == 401


def test_password_never_in_repr_or_logs(
    make_sandbox: Callable[..., Sandbox], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-Pa55"
    caplog.set_level(logging.DEBUG, logger="xnatio")
    sandbox = make_sandbox(password=secret)
    httpx.get(sandbox.url + "/data/auth", auth=("admin", secret))
    httpx.get(sandbox.url + "/data/auth", auth=("admin", secret + "x"))
    encoded = base64.b64encode(f"admin:{secret}".encode()).decode()
    texts = [repr(sandbox), repr(sandbox.config), repr(sandbox.auth), caplog.text]
    assert caplog.text  # requests were logged at all
    for text in texts:
        assert secret not in text
        assert encoded not in text
    assert repr(SandboxConfig(data_dir=".", password=secret)).count(secret) == 0


def test_concurrent_logins_get_distinct_sessions(sandbox: Sandbox) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def login() -> None:
        sid = httpx.get(sandbox.url + "/data/JSESSION", auth=("admin", "admin")).text
        with lock:
            ids.append(sid)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 8
