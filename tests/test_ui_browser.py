"""The dashboard in a real browser: headless Chromium (selenium) against a live `conclave serve` whose
experts answer through the scripted upstream (tests/fake_upstream.py), with API keys on.

Each page loads without a console error and fits 1280 px and 390 px; the overview counts requests
sent before; the experts page pings an expert; the playground routes a prompt and streams the answer
(and, for k = 2, shows the candidates and the winner); the admin key is enforced. Screenshots of each
page are saved under pytest's temporary directory (their paths are printed; -s shows them).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys

import httpx
import pytest

from experts_registry import BUNDLED_FLAG, open_store
from experts_registry.model import Expert

from .conftest import REDIS_URL, fake_expert
from .browser import chromium, console_errors, desktop, phone_width, require_browser, text_of, too_wide, wait_for
from .servers import running_gateway, start_fake_upstream, start_gateway

pytestmark = pytest.mark.real
ADMIN, USER = "sk-ui-admin-test", "sk-ui-user-test"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """(base URL, screenshot folder): a gateway with two experts on the scripted upstream, keys on."""
    require_browser()
    upstream, up_base = start_fake_upstream()
    home = tmp_path_factory.mktemp("ui-home")
    store = open_store(home)
    store.claim(BUNDLED_FLAG)   # only the two upstream experts: no local model to load
    store.add(Expert(name="alpha", backend="litellm", model="openai/ok", api_base=up_base + "/v1",
                     skills=("math", "algebra"), params_b=7.0, price_per_mtok=0.2, description="the math one"))
    store.add(Expert(name="beta", backend="litellm", model="openai/ok", api_base=up_base + "/v1",
                     skills=("general", "chat"), params_b=1.5, description="the generalist"))
    proc, base = start_gateway(home, home / "server.log", CONCLAVE_ROUTER="tags", CONCLAVE_GENERALIST="beta",
                               CONCLAVE_ADMIN_KEYS=ADMIN, CONCLAVE_API_KEYS=USER)
    shots = tmp_path_factory.mktemp("ui-screenshots")
    try:
        yield base, shots
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        upstream.kill()


@pytest.fixture(scope="module")
def browser(gateway):
    driver = chromium()
    base, _ = gateway
    # the browser's own Basic-auth path: credentials in the address once, then reused for the page's fetches
    host = base.split("://", 1)[1]
    driver.get(f"http://operator:{ADMIN}@{host}/ui/workers")
    assert console_errors(driver) == []
    yield driver
    driver.quit()


def open_page(driver, base: str, path: str, ready_css: str):
    from selenium.webdriver.common.by import By

    driver.get(base + path)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ready_css))
    return driver


def screenshot(driver, shots, name: str) -> str:
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    if name == "routing" and os.environ.get("CONCLAVE_UI_FIGURE"):   # the README's figure, from the real page
        shutil.copy(path, os.environ["CONCLAVE_UI_FIGURE"])
    return str(path)


def check_both_widths(driver, shots, name: str) -> None:
    assert too_wide(driver) == [], f"{name} scrolls sideways at 1280 px"
    screenshot(driver, shots, name)
    phone_width(driver)
    try:
        assert too_wide(driver) == [], f"{name} scrolls sideways at 390 px"
        screenshot(driver, shots, name + "-390px")
    finally:
        desktop(driver)


def chat(base: str, prompt: str, model: str = "conclave-auto") -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=base + "/v1", api_key=USER)
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=8)
    return r.model_dump()


def test_the_admin_key_is_enforced(gateway, browser):
    base, shots = gateway
    no_key = httpx.get(base + "/ui")
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"].startswith("Basic realm=")
    basic = lambda key: "Basic " + base64.b64encode(f"op:{key}".encode()).decode()   # noqa: E731
    for path in ("/ui", "/ui/routing", "/ui/api/overview", "/ui/api/experts", "/ui/static/app.js"):
        assert httpx.get(base + path, headers={"authorization": f"Bearer {USER}"}).status_code == 403, path
        assert httpx.get(base + path, headers={"authorization": basic(USER)}).status_code == 403, path
        assert httpx.get(base + path, headers={"authorization": basic(ADMIN)}).status_code == 200, path
        assert httpx.get(base + path, headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200, path
    ping = httpx.post(base + "/ui/api/experts/alpha/ping", headers={"authorization": f"Bearer {ADMIN}"})
    assert ping.status_code == 400 and ping.json()["error"]["param"] == "X-Conclave-UI"   # no cross-site actions
    # a browser with a user key is refused too
    user_browser = chromium()
    try:
        user_browser.get(f"http://operator:{USER}@{base.split('://', 1)[1]}/ui")
        assert "needs an admin key" in user_browser.find_element("tag name", "body").text
        screenshot(user_browser, shots, "user-key-403")
    finally:
        user_browser.quit()


def test_the_overview_counts_the_requests_sent(gateway, browser):
    base, shots = gateway
    for prompt in ("solve this algebra problem", "hello there", "more math please"):
        assert chat(base, prompt)["choices"][0]["message"]["content"] == "upstream ok"
    open_page(browser, base, "/ui", ".card")
    wait_for(browser, lambda d: text_of(d, "#request-count") not in ("", "0", "–"))
    assert int(text_of(browser, "#request-count").replace(",", "")) >= 3
    assert "alpha" in text_of(browser, "#overview-body")   # the per-expert table
    assert "ms" in text_of(browser, "#overview-body") or " s" in text_of(browser, "#overview-body")   # units
    check_both_widths(browser, shots, "overview")
    assert console_errors(browser) == []


def test_the_experts_page_shows_health_and_pings(gateway, browser):
    from selenium.webdriver.common.by import By

    base, shots = gateway
    open_page(browser, base, "/ui/experts", "button.ping")
    body = text_of(browser, "#experts-body")
    assert "alpha" in body and "beta" in body and "healthy" in body and "7.000 B params" in body
    browser.find_element(By.CSS_SELECTOR, 'button.ping[data-expert="alpha"]').click()
    wait_for(browser, lambda d: "answered in" in text_of(d, "#experts-body"))
    assert "upstream ok" in text_of(browser, "#experts-body")
    check_both_widths(browser, shots, "experts")
    assert console_errors(browser) == []


def play(browser, prompt: str, k: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    Select(browser.find_element(By.ID, "router")).select_by_value("tags")
    Select(browser.find_element(By.ID, "k")).select_by_value(k)
    browser.find_element(By.ID, "go").click()
    wait_for(browser, lambda d: "done in" in text_of(d, "#answer-expert"))


def test_the_playground_routes_and_streams_the_answer(gateway, browser):
    base, shots = gateway
    open_page(browser, base, "/ui/routing", "#prompt")
    play(browser, "an algebra question: solve x + 2 = 5", "2")
    assert "won" in text_of(browser, "#answer")                  # k = 2: the candidates and the winner
    play(browser, "an algebra question: solve x + 2 = 5", "1")
    decision = text_of(browser, "#decision")
    assert "tags → alpha" in decision and "beta" in decision     # the choice, and every candidate
    assert "matched_skills" in decision                          # the evidence
    assert text_of(browser, "#answer-by") == "alpha"
    assert text_of(browser, "#answer-text") == "upstream ok"     # the streamed answer
    wait_for(browser, lambda d: "#" in text_of(d, "#decisions") and "alpha" in text_of(d, "#decisions"))
    assert "solve x" not in text_of(browser, "#decisions")       # prompts hidden by default: hash and length
    check_both_widths(browser, shots, "routing")
    assert console_errors(browser) == []


def test_the_workers_page_says_the_redis_queue_is_off(gateway, browser):
    base, shots = gateway
    open_page(browser, base, "/ui/workers", "#no-queue")
    assert "CONCLAVE_SCHED_QUEUE=redis" in text_of(browser, "#no-queue")
    check_both_widths(browser, shots, "workers")
    assert console_errors(browser) == []


def test_the_workers_page_shows_the_cluster_on_the_redis_queue(browser, redis_prefix, tmp_path):
    """A gateway on the Redis queue and one `conclave worker --kind fake`: the worker, what it holds,
    the queue per expert and the history chart."""
    shots = tmp_path
    home = tmp_path / "home"
    store = open_store(home, REDIS_URL, redis_prefix)
    store.claim(BUNDLED_FLAG)
    store.add(fake_expert("echo", skills=("general",)))
    env = {"CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": redis_prefix, "CONCLAVE_SCHED_QUEUE": "redis",
           "CONCLAVE_ROUTER": "tags", "CONCLAVE_GENERALIST": "echo"}
    worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--kind", "fake", "--name", "ui-worker-1",
                               "--reclaim-ms", "1000"], env={**os.environ, **env, "PYTHONPATH": os.getcwd(),
                                                             "CONCLAVE_HOME": str(home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with running_gateway(home, tmp_path / "server.log", **env) as base:
            from openai import OpenAI

            answer = OpenAI(base_url=base + "/v1", api_key="none").chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
            assert answer.choices[0].message.content
            open_page(browser, base, "/ui/workers", "#workers-body table")
            # the worker's row: live, holding echo (its heartbeat publishes what it holds every second)
            wait_for(browser, lambda d: "ui-worker-1 live" in text_of(d, "#worker-table")
                     and "echo" in text_of(d, "#worker-table"))
            assert "ui-worker-1 (loaded)" in text_of(browser, "#queue-table")   # the placement table
            check_both_widths(browser, shots, "workers-redis")
            assert console_errors(browser) == []
    finally:
        worker.terminate()
        worker.wait(10)
