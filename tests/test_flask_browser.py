"""End to end: the Flask example application (examples/flask_app) served on 127.0.0.1 and
driven in headless Chromium through Selenium. A person logs in, edits a client, opens its
history page and sees the change and who made it; a screenshot of that page is taken.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without
them the test is skipped, saying what is missing, unless ``AUDIT_TEST_REQUIRE_BROWSER=1``
(set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from audit_mongo.flask import current_log
from examples.flask_app import create_app
from examples.flask_app.models import DEMO_USERS, db

CHROMIUM = os.environ.get("AUDIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AUDIT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
# Chromium on a closed network: no background connections, no first-run or sync traffic.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
WAIT = 15.0  # seconds for a page to show what a step waits for


def missing_browser() -> str | None:
    """Why the browser test can't run here, or None."""
    reasons = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        reasons.append("the selenium package (pip install -e '.[test]')")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            reasons.append(f"{path} (apt-get install {package})")
    if not reasons:
        return None
    return "headless Chromium end-to-end test needs " + " and ".join(reasons)


@pytest.fixture
def browser_ready() -> None:
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("AUDIT_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"AUDIT_TEST_REQUIRE_BROWSER=1, but {reason}")
    pytest.skip(reason)


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """The example application on a free port of 127.0.0.1, served from a thread."""
    app = create_app(
        {"SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'example.db'}"}
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="example-app", daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        with app.app_context():
            current_log().close()
            db.engine.dispose()


@pytest.fixture
def driver(browser_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    chrome = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    chrome.set_page_load_timeout(WAIT)
    try:
        yield chrome
    finally:
        chrome.quit()


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height from its header (AssertionError if it is not a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_log_in_edit_a_client_and_see_the_change_on_its_history_page(
    driver: Any, served_app: tuple[Flask, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    app, base = served_app
    wait = WebDriverWait(driver, WAIT)
    started = time.monotonic()

    # Anonymous: the client list sends us to the login form, which names the demo users.
    driver.get(f"{base}/")
    wait.until(shown.visibility_of_element_located((By.ID, "login-form")))
    assert "alice" in driver.find_element(By.CLASS_NAME, "hint").text
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(DEMO_USERS["alice"])
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()

    # The client list; edit Company A's name.
    row = wait.until(shown.visibility_of_element_located((By.ID, "client-1")))
    assert "Company A" in row.text
    assert "Logged in as alice" in driver.find_element(By.CLASS_NAME, "who").text
    row.find_element(By.LINK_TEXT, "Edit").click()
    name = wait.until(shown.visibility_of_element_located((By.ID, "name")))
    name.clear()
    name.send_keys("Company A Ltd")
    driver.find_element(By.CSS_SELECTOR, "#client-form button[type=submit]").click()
    row = wait.until(shown.text_to_be_present_in_element((By.ID, "client-1"), "Company A Ltd"))
    assert "Saved Company A Ltd." in driver.find_element(By.CLASS_NAME, "flash").text

    # Its history page: the change, old → new, and who made it, newest first.
    driver.find_element(By.ID, "client-1").find_element(By.LINK_TEXT, "History").click()
    timeline = wait.until(shown.visibility_of_element_located((By.CSS_SELECTOR, "table.entries")))
    assert driver.current_url == f"{base}/audit/clients/1"
    newest, oldest = timeline.find_elements(By.CSS_SELECTOR, "tbody tr")
    cells = [cell.text for cell in newest.find_elements(By.TAG_NAME, "td")]
    assert cells[1:3] == ["alice", "update"]
    assert re.search(r"name ?: '?Company A'? → '?Company A Ltd'?", cells[3]), cells[3]
    assert "/clients/1/edit" in cells[3]  # the request it came from
    assert "nobody known" in oldest.text and "create" in oldest.text  # the seed

    # A page worth a screenshot: rendered, styled, with content.
    size = timeline.size
    assert size["width"] > 600 and size["height"] > 100
    screenshot = tmp_path / "history_page.png"
    assert driver.save_screenshot(str(screenshot))
    data = screenshot.read_bytes()
    width, height = png_size(data)
    assert width >= 1000 and height >= 600, (width, height)
    assert len(data) > 20_000, f"a {len(data)}-byte screenshot is too small to show a page"

    with app.app_context():
        (update,) = current_log().collection.find({"action": "update"})
    assert update["current_user_id"] == "alice"
    assert update["changes"] == {"name": {"added": ["Company A Ltd"], "deleted": ["Company A"]}}
    print(f"browser steps took {time.monotonic() - started:.1f} s; screenshot {screenshot}")
