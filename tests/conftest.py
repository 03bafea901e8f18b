"""Shared fixtures: an isolated CONCLAVE_HOME per test, both stores, a gateway on the fake backend."""

from __future__ import annotations

import os
import uuid

import pytest

from experts_registry.model import Expert

REDIS_URL = os.environ.get("CONCLAVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's data dir, keys or Redis unless it asks."""
    monkeypatch.setenv("CONCLAVE_HOME", str(tmp_path / "home"))
    # the shared test Redis keeps nothing on disk (--save '' --appendonly no): gateways may use it as a store
    monkeypatch.setenv("CONCLAVE_ALLOW_VOLATILE_REDIS", "1")
    for name in ("CONCLAVE_REDIS_URL", "CONCLAVE_API_KEYS", "CONCLAVE_ROUTER", "CONCLAVE_REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture
def redis_prefix():
    if not redis_available():
        pytest.skip(f"no Redis answers at {REDIS_URL} (.ci/run starts one; start redis-server to run this)")
    import redis

    prefix = f"conclave-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(prefix + "*"):
        r.delete(key)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    from experts_registry import open_store

    if request.param == "sqlite":
        return open_store(tmp_path / "store")
    prefix = request.getfixturevalue("redis_prefix")
    return open_store(tmp_path / "unused", REDIS_URL, prefix=prefix)


def fake_expert(name: str, behaviour: str = "echo", **kw) -> Expert:
    """An expert served by the scripted FakeBackend (registered under the llamacpp kind)."""
    return Expert(name=name, backend="llamacpp", model=f"fake:{behaviour}", **kw)


@pytest.fixture
def fake_gateway(tmp_path):
    """A Gateway whose llamacpp backend is the scripted fake, with echo/fail/hang/midfail experts."""
    from experts_registry import open_store
    from service.backends import BackendPool
    from service.backends.fake import FakeBackend
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    settings = load_settings().with_(expert_timeout=1.0, max_body_bytes=20_000, generalist="echo")
    store = open_store(tmp_path / "fakes")
    store.add(fake_expert("echo", skills=("general",)))
    store.add(fake_expert("mathy", skills=("math", "algebra")))
    for behaviour in ("fail", "hang", "midfail"):
        store.add(fake_expert(behaviour, behaviour))
    return Gateway(settings, store, BackendPool(settings, {"llamacpp": lambda s: FakeBackend()}))


@pytest.fixture
def client_for():
    """Build a TestClient over create_app for a given gateway and settings."""
    from fastapi.testclient import TestClient

    from service.http.app import create_app

    clients = []

    def make(gateway, **settings_changes):
        from service.pipeline.routing import RouterHost

        settings = gateway.settings.with_(**settings_changes)
        gateway.settings = settings
        gateway.routers = RouterHost(settings)
        c = TestClient(create_app(settings, gateway))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
