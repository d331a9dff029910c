"""Alias tokens over real HTTP (docs/xnat-behaviour.md §2.4): issue, validate, invalidate, and
Basic alias+secret."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx

from xnatio.sandbox import Sandbox
from xnatio.sandbox.auth import AliasToken


def test_issue_validate_use_and_invalidate(sandbox: Sandbox, client: httpx.Client) -> None:
    r = client.get("/data/services/tokens/issue")
    assert r.status_code == 200, r.text
    token = r.json()
    assert set(token) >= {
        "alias",
        "secret",
        "xdatUserId",
        "singleUse",
        "estimatedExpirationTime",
        "validIPAddresses",
        "id",
        "enabled",
        "created",
        "timestamp",
        "disabled",
    }
    assert uuid.UUID(token["alias"]) and token["xdatUserId"] == "admin"
    assert token["singleUse"] is False and token["enabled"] is True
    assert token["estimatedExpirationTime"] - token["created"] == 2 * 24 * 3600 * 1000
    alias, secret = token["alias"], token["secret"]

    ok = client.get(f"/data/services/tokens/validate/{alias}/{secret}")
    assert ok.json() == {"valid": "admin"}
    assert client.get(f"/data/services/tokens/validate/{alias}/wrong").json() == {}

    with httpx.Client(base_url=sandbox.url, auth=(alias, secret)) as by_token:
        who = by_token.get("/data/auth")
        assert who.status_code == 200 and who.text == "User 'admin' is logged in"
        assert "JSESSIONID" in who.cookies
        assert by_token.get("/data/projects/P1").status_code == 200
    wrong = httpx.get(sandbox.url + "/data/auth", auth=(alias, "nope"))
    assert wrong.status_code == 401

    gone = client.get(f"/data/services/tokens/invalidate/{alias}")
    assert gone.status_code == 200 and gone.json() == {"result": "OK"}
    after = httpx.get(sandbox.url + "/data/auth", auth=(alias, secret))
    assert after.status_code == 403
    assert "Your security token has expired or is invalid." in after.text
    again = client.get(f"/data/services/tokens/invalidate/{alias}")
    assert again.status_code == 404 and f"Can't find an alias token with the alias {alias}" in (
        again.text
    )
    unknown = httpx.get(sandbox.url + "/data/auth", auth=(str(uuid.uuid4()), "x"))
    assert unknown.status_code == 403
    form = httpx.post(
        sandbox.url + "/data/services/auth", data={"username": alias, "password": secret}
    )
    assert form.status_code == 403


def test_issue_for_a_named_user_and_bad_operations(client: httpx.Client) -> None:
    r = client.get("/data/services/tokens/issue/user/admin")
    assert r.status_code == 200 and r.json()["xdatUserId"] == "admin"
    assert client.get("/data/services/tokens/issue/user/nobody").status_code == 404
    assert client.get("/data/services/tokens/frobnicate").status_code == 400


def test_tokens_expire(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(alias_token_timeout=0.3)
    token = httpx.get(sb.url + "/data/services/tokens/issue", auth=("admin", "admin")).json()
    creds = (token["alias"], token["secret"])
    assert httpx.get(sb.url + "/data/auth", auth=creds).status_code == 200
    time.sleep(0.4)
    assert httpx.get(sb.url + "/data/auth", auth=creds).status_code == 403


def test_single_use_token_and_repr(sandbox: Sandbox) -> None:
    token = sandbox.auth.issue_token("admin", single_use=True)
    assert isinstance(token, AliasToken) and token.secret not in repr(token)
    creds = (token.alias, token.secret)
    assert httpx.get(sandbox.url + "/data/auth", auth=creds).status_code == 200
    assert httpx.get(sandbox.url + "/data/auth", auth=creds).status_code == 403
