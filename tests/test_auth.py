"""Keys, roles, limits: the authorisation matrix over every route, on the scripted fake backend."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from experts_registry.keys import new_key

NO, BAD, REVOKED, USER, ADMIN = "no key", "bad key", "revoked key", "user key", "admin key"
EXPERT = {"name": "added", "backend": "litellm", "model": "openai/x"}


@pytest.fixture
def keyed(fake_gateway, client_for):
    """A client plus the secrets of a user, an admin and a revoked key (stored hashed)."""
    store = fake_gateway.store
    secrets = {}
    for who, role in ((USER, "user"), (ADMIN, "admin"), (REVOKED, "admin")):
        secret, key = new_key(who, role)
        store.put_key(key)
        secrets[who] = (secret, key)
    store.put_key(replace(secrets[REVOKED][1], revoked=True))
    client = client_for(fake_gateway, key_cache_seconds=0.0)
    return client, {who: s for who, (s, _) in secrets.items()}, fake_gateway


def headers(secrets, who):
    if who == NO:
        return {}
    if who == BAD:
        return {"Authorization": "Bearer sk-conclave-' OR 1=1 --"}
    return {"Authorization": f"Bearer {secrets[who]}"}


def call(client, gw, method, path, who, secrets):
    if path == "/admin/keys/{id}":
        path = "/admin/keys/" + gw.store.list_keys()[0].id
    kwargs = {"headers": headers(secrets, who)}
    if method == "POST" and path == "/v1/chat/completions":
        kwargs["json"] = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    elif method == "POST" and path == "/v1/completions":
        kwargs["json"] = {"model": "echo", "prompt": "hi"}
    elif method == "POST" and path == "/admin/experts":
        kwargs["json"] = EXPERT
    elif method == "POST" and path == "/admin/keys":
        kwargs["json"] = {"name": "made-over-http"}
    return client.request(method, path, **kwargs)


ROUTES = [("GET", "/health", "open"), ("GET", "/metrics", "admin"), ("GET", "/v1/models", "user"),
          ("POST", "/v1/chat/completions", "user"), ("POST", "/v1/completions", "user"),
          ("GET", "/admin/experts", "admin"),
          ("POST", "/admin/experts", "admin"), ("GET", "/admin/experts/echo", "admin"),
          ("DELETE", "/admin/experts/mathy", "admin"), ("GET", "/admin/keys", "admin"),
          ("POST", "/admin/keys", "admin"), ("DELETE", "/admin/keys/{id}", "admin")]
EXPECTED = {  # route level -> caller -> status class
    "open": {NO: 200, BAD: 200, REVOKED: 200, USER: 200, ADMIN: 200},
    "user": {NO: 401, BAD: 401, REVOKED: 401, USER: 200, ADMIN: 200},
    "admin": {NO: 401, BAD: 401, REVOKED: 401, USER: 403, ADMIN: 200},
}


@pytest.mark.parametrize("method,path,level", ROUTES)
@pytest.mark.parametrize("who", [NO, BAD, REVOKED, USER, ADMIN])
def test_authorisation_matrix(keyed, method, path, level, who):
    client, secrets, gw = keyed
    r = call(client, gw, method, path, who, secrets)
    expected = EXPECTED[level][who]
    got = 200 if r.status_code in (200, 201) else r.status_code
    assert got == expected, (method, path, who, r.text)
    if got >= 400:
        assert r.json()["error"]["type"] in ("authentication_error", "permission_error")


def test_admin_routes_are_closed_when_no_key_exists(fake_gateway, client_for):
    client = client_for(fake_gateway)
    assert client.post("/v1/chat/completions", json={"model": "echo", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer anything"}).status_code == 200
    r = client.post("/admin/experts", json=EXPERT)
    assert r.status_code == 403 and "conclave keys create" in r.json()["error"]["message"]


def test_admin_http_changes_reach_the_registry(keyed):
    client, secrets, gw = keyed
    h = headers(secrets, ADMIN)
    assert client.post("/admin/experts", json=EXPERT, headers=h).status_code == 201
    assert gw.store.get("added").model == "openai/x"
    assert client.post("/admin/experts", json=EXPERT, headers=h).status_code == 409
    ssrf = {**EXPERT, "name": "meta", "api_base": "http://169.254.169.254/latest"}
    r = client.post("/admin/experts", json=ssrf, headers=h)
    assert r.status_code == 422 and r.json()["error"]["param"] == "api_base"
    assert client.delete("/admin/experts/added", headers=h).status_code == 200
    made = client.post("/admin/keys", json={"name": "bot", "models": ["echo"], "rpm": 5}, headers=h).json()
    assert made["secret"].startswith("sk-conclave-") and "hash" not in made["key"]
    assert client.get("/v1/models", headers={"Authorization": "Bearer " + made["secret"]}).status_code == 200


def test_user_key_limited_to_its_models(keyed):
    client, secrets, gw = keyed
    secret, key = new_key("narrow", "user", models=["echo", "conclave-auto"])
    gw.store.put_key(key)
    h = {"Authorization": f"Bearer {secret}"}
    ids = [m["id"] for m in client.get("/v1/models", headers=h).json()["data"]]
    assert ids == ["conclave-auto", "echo"]
    r = client.post("/v1/chat/completions", headers=h, json={"model": "mathy", "messages": [
        {"role": "user", "content": "hi"}]})
    assert r.status_code == 403 and r.json()["error"]["param"] == "model"
    r = client.post("/v1/chat/completions", headers=h, json={"model": "conclave-auto", "messages": [
        {"role": "user", "content": "an algebra question"}]})   # would route to mathy: restricted to echo
    assert r.status_code == 200 and r.headers["x-conclave-expert"] == "echo"
    r = client.post("/admin/keys", headers=h, json={"name": "escalate", "role": "admin"})
    assert r.status_code == 403   # a user key cannot mint keys, let alone bigger ones


def test_requests_per_minute_limit_is_429_with_retry_after(keyed):
    client, _, gw = keyed
    secret, key = new_key("slow", "user", rpm=2)
    gw.store.put_key(key)
    h = {"Authorization": f"Bearer {secret}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    assert [client.post("/v1/chat/completions", headers=h, json=body).status_code for _ in range(2)] == [200, 200]
    r = client.post("/v1/chat/completions", headers=h, json=body)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_tokens_per_minute_limit(keyed):
    client, _, gw = keyed
    secret, key = new_key("thrifty", "user", tpm=5)
    gw.store.put_key(key)
    h = {"Authorization": f"Bearer {secret}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}
    assert client.post("/v1/chat/completions", headers=h, json=body).status_code == 200  # spends 3 + 5 tokens
    assert client.post("/v1/chat/completions", headers=h, json=body).status_code == 429


def test_secrets_are_stored_hashed(keyed, tmp_path):
    _, secrets, gw = keyed
    raw = (gw.store.path).read_bytes() + b"".join(
        p.read_bytes() for p in gw.store.path.parent.glob("*-wal"))
    for secret in secrets.values():
        assert secret.encode() not in raw
    rows = sqlite3.connect(gw.store.path).execute("SELECT hash FROM api_keys").fetchall()
    assert len(rows) == 3 and all(len(h) == 64 for (h,) in rows)


def test_keys_cli_create_list_revoke(fake_gateway, client_for, monkeypatch):
    import json

    from click.testing import CliRunner

    from service.cli import main

    runner = CliRunner()
    made = json.loads(runner.invoke(main, ["keys", "create", "cli-bot", "--models", "echo", "--rpm", "9",
                                           "--json"]).output)
    assert made["key"]["models"] == ["echo"] and made["key"]["rpm"] == 9
    listing = runner.invoke(main, ["keys", "list"]).output
    assert made["key"]["id"] in listing and made["secret"] not in listing
    assert runner.invoke(main, ["keys", "revoke", made["key"]["id"]]).exit_code == 0
    assert "REVOKED" in runner.invoke(main, ["keys", "list"]).output
    bad = runner.invoke(main, ["keys", "revoke", "ck_nope"])
    assert bad.exit_code == 1 and "conclave keys list" in bad.output
