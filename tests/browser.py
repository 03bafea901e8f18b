"""Headless Chromium driven by selenium, for the dashboard's browser tests (tests/test_ui_browser.py).

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (scripts/test.sh installs
them); when they are missing the tests fail and say how to install them, unless CONCLAVE_SKIP_BROWSER=1.
"""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL = "apt-get install -y chromium chromium-driver (scripts/test.sh does it), and pip install selenium"


def require_browser() -> None:
    """Fail loudly when the browser cannot run (a skip only when explicitly opted out)."""
    if os.environ.get("CONCLAVE_SKIP_BROWSER") == "1":
        pytest.skip("CONCLAVE_SKIP_BROWSER=1: the browser tests were opted out")
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (Python)")
    if missing:
        pytest.fail(f"the browser tests need {', '.join(missing)}: {INSTALL}; or set CONCLAVE_SKIP_BROWSER=1")


def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium that records the page's console (goog:loggingPrefs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def console_errors(driver) -> list[str]:
    """The console's errors since the last call (SEVERE entries: JS errors, failed loads, CSP refusals)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver, condition, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def too_wide(driver) -> list[str]:
    """Elements reaching past the viewport's right edge (wide tables scroll inside their own box, which
    is allowed): an empty list when the page needs no sideways scrolling."""
    return driver.execute_script("""
        const w = document.documentElement.clientWidth, out = [];
        for (const el of document.querySelectorAll("body *")) {
          if (el.closest(".scroll")) continue;
          const r = el.getBoundingClientRect();
          if (r.width && r.right > w + 1) out.push(`${el.tagName}.${el.className} right=${Math.round(r.right)} > ${w}`);
        }
        return out;""")


def phone_width(driver, width: int = 390, height: int = 844) -> None:
    """Emulate a phone's viewport (390 CSS px wide); ``desktop()`` ends it."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})


def desktop(driver) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
