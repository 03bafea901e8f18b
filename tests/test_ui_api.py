"""The dashboard's routes (service/http/ui.py) over the scripted fake backend: who may see them, and
what the JSON behind each view says."""

from __future__ import annotations

import base64
import json

import pytest

from experts_registry.keys import new_key
from experts_registry.model import CAPABILITIES

ACT = {"x-conclave-ui": "1"}
READS = ("/ui", "/ui/experts", "/ui/routing", "/ui/workers", "/ui/static/app.js", "/ui/api/overview",
         "/ui/api/experts", "/ui/api/routers", "/ui/api/decisions", "/ui/api/workers")


def basic(secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"operator:{secret}".encode()).decode()}


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def keyed(fake_gateway, client_for):
    secrets = {}
    for role in ("user", "admin"):
        secrets[role], key = new_key(role, role)
        fake_gateway.store.put_key(key)
    return client_for(fake_gateway, key_cache_seconds=0.0), secrets


@pytest.fixture
def open_client(fake_gateway, client_for):
    return client_for(fake_gateway)


def ask(client, content: str, model: str = "conclave-auto", headers: dict | None = None, **kw):
    return client.post("/v1/chat/completions", headers=headers or {},
                       json={"model": model, "messages": [{"role": "user", "content": content}], **kw})


@pytest.mark.parametrize("path", READS)
def test_reads_need_the_admin_key_once_keys_exist(keyed, path):
    client, s = keyed
    r = client.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic realm=")
    assert client.get(path, headers=bearer(s["user"])).status_code == 403
    assert client.get(path, headers=basic(s["user"])).status_code == 403
    assert client.get(path, headers=bearer(s["admin"])).status_code == 200
    assert client.get(path, headers=basic(s["admin"])).status_code == 200


def test_basic_credentials_count_only_under_ui(keyed):
    client, s = keyed
    assert client.get("/metrics", headers=basic(s["admin"])).status_code == 401   # the API keeps Bearer
    r = client.get("/ui", headers={"Authorization": "Basic !!!not-base64"})
    assert r.status_code == 401 and "Basic credentials" in r.json()["error"]["message"]


def test_actions_need_the_admin_key_and_the_dashboard_header(keyed):
    client, s = keyed
    for path, body in (("/ui/api/experts/echo/ping", None), ("/ui/api/route", {"prompt": "algebra"}),
                       ("/ui/api/chat", {"model": "echo", "messages": [{"role": "user", "content": "hi"}]})):
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers={**bearer(s["user"]), **ACT}).status_code == 403
        refused = client.post(path, json=body, headers=bearer(s["admin"]))      # as another site's form would
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "X-Conclave-UI"
        assert client.post(path, json=body, headers={**bearer(s["admin"]), **ACT}).status_code == 200, path


def test_without_keys_the_dashboard_is_open_like_metrics(open_client):
    assert open_client.get("/ui").status_code == 200
    assert open_client.get("/ui/api/overview").status_code == 200


def test_the_pages_are_the_shipped_files_under_a_strict_policy(open_client):
    page = open_client.get("/ui/routing")
    assert page.headers["content-type"].startswith("text/html") and "/ui/static/routing.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")   # nothing from elsewhere
    assert open_client.get("/ui/static/routing.js").headers["content-type"].startswith("text/javascript")
    for bad in ("nope.js", "..%2Fui.py", ".hidden.js", "ui.py"):
        assert open_client.get("/ui/static/" + bad).status_code == 404
    assert open_client.get("/ui/nope").status_code == 404


def test_the_overview_counts_requests_errors_tokens_and_routing(open_client):
    assert ask(open_client, "an algebra question").status_code == 200
    assert ask(open_client, "hello", model="echo").status_code == 200
    assert ask(open_client, "boom", model="fail").status_code == 502
    o = open_client.get("/ui/api/overview?window=60").json()
    assert o["requests"]["count"] == 3 and o["requests"]["status"] == {"2xx": 2, "5xx": 1}
    assert o["routing"]["routed"] == 1 and o["routing"]["direct"] == 1
    assert o["errors"] == {"upstream_error": 1} and o["tokens"]["completion"] > 0
    assert {e["expert"] for e in o["experts"]} == {"mathy", "echo", "fail"}
    assert o["latency_s"]["p50"] is not None and o["series"] and o["window_s"] == 60
    too_short = open_client.get("/ui/api/overview?window=5")
    assert too_short.status_code == 400 and too_short.json()["error"]["param"] == "query.window"


def test_experts_show_registry_health_and_the_last_error(open_client, fake_gateway):
    for _ in range(fake_gateway.settings.breaker_failures):
        ping = open_client.post("/ui/api/experts/fail/ping", headers=ACT).json()
        assert ping["ok"] is False and "scripted failure" in ping["error"] and ping["status"] == 502
    rows = {e["name"]: e for e in open_client.get("/ui/api/experts").json()}
    assert rows["mathy"]["skills"] == ["math", "algebra"] and rows["mathy"]["breaker"]["state"] == "closed"
    assert rows["mathy"]["capabilities"] == [c for c in CAPABILITIES if c in fake_gateway.store.get("mathy").supports]
    assert rows["mathy"]["capabilities_default"] is (fake_gateway.store.get("mathy").capabilities is None)
    broken = rows["fail"]["breaker"]
    assert broken["state"] == "open" and broken["retry_in_s"] > 0 and "scripted failure" in broken["last_error"]
    ok = open_client.post("/ui/api/experts/echo/ping", headers=ACT).json()
    assert ok["ok"] is True and ok["text"].startswith("echo says") and ok["usage"]["completion_tokens"] > 0
    assert open_client.post("/ui/api/experts/nobody/ping", headers=ACT).status_code == 404


def test_the_route_preview_shows_every_candidate_and_is_not_recorded(open_client, fake_gateway):
    r = open_client.post("/ui/api/route", headers=ACT, json={"prompt": "an algebra question", "router": "tags", "k": 2})
    d = r.json()
    assert d["model"] == "conclave-moe" and d["experts"] == ["mathy", "echo"] and d["router"] == "tags"
    assert len(d["candidates"]) == len(fake_gateway.store.list())
    assert d["candidates"][0]["evidence"] == {"matched_skills": ["algebra"]}
    assert fake_gateway.decisions.recent() == []
    assert 'conclave_routed_total{expert="mathy"' not in open_client.get("/metrics").text
    for body, status, param in (({"prompt": "x", "k": 0}, 400, "k"), ({"prompt": ""}, 400, "prompt"),
                                ({"prompt": "x", "extra": 1}, 400, "extra"), ({"prompt": "x", "router": "nope"}, 400, "router")):
        bad = open_client.post("/ui/api/route", headers=ACT, json=body)
        assert bad.status_code == status and param in str(bad.json()["error"]["param"]), body


def test_the_playground_chat_streams_like_the_api_and_is_recorded(open_client):
    body = {"model": "conclave-auto", "stream": True, "messages": [{"role": "user", "content": "an algebra question"}],
            "conclave": {"router": "tags"}}
    r = open_client.post("/ui/api/chat", headers=ACT, json=body)
    assert r.headers["content-type"].startswith("text/event-stream") and r.headers["x-conclave-expert"] == "mathy"
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    assert events[0]["conclave"]["route"]["experts"] == ["mathy"] and r.text.rstrip().endswith("data: [DONE]")
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]).startswith("mathy says")
    [entry] = open_client.get("/ui/api/decisions").json()["decisions"]
    assert entry["experts"] == ["mathy"] and "text" not in entry["prompt"]
    assert 'conclave_requests_total{route="/ui/api/chat",status="200"}' in open_client.get("/metrics").text


def test_decisions_show_prompt_text_only_when_enabled(fake_gateway, client_for):
    from service.pipeline.decisions import DecisionLog

    fake_gateway.decisions = DecisionLog(size=5, show_prompts=True)
    client = client_for(fake_gateway)
    ask(client, "an algebra question")
    got = client.get("/ui/api/decisions").json()
    assert got["show_prompts"] is True and got["decisions"][0]["prompt"]["text"] == "an algebra question"


def test_workers_say_when_the_redis_queue_is_off(open_client):
    w = open_client.get("/ui/api/workers").json()
    assert w["queue"] == "local" and "CONCLAVE_SCHED_QUEUE=redis" in w["message"] and "local" in w


def test_every_file_the_page_names_ships_in_the_package():
    """index.html's scripts and stylesheet exist in ui_static/, which pyproject ships as package data."""
    import re
    import tomllib
    from pathlib import Path

    from service.http.ui import static_file

    root = Path(__file__).resolve().parents[1]
    page = (root / "service/http/ui_static/index.html").read_text()
    names = re.findall(r'(?:src|href)="/ui/static/([^"]+)"', page)
    assert len(names) >= 8 and all(static_file(n) is not None for n in names)
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "ui_static/*" in data["service.http"]


def test_capabilities_are_the_declared_ones_or_the_backend_default():
    from experts_registry.model import Expert
    from service.http.ui_views import capabilities

    assert capabilities(Expert(name="r", backend="litellm", model="m", capabilities=["vision", "tools"])) == \
        ["tools", "vision"]
    assert capabilities(Expert(name="l", backend="llamacpp", model="bundled:smollm2")) == ["json_schema", "logprobs"]
    assert capabilities(Expert(name="n", backend="litellm", model="m", capabilities=[])) == []
