"""The dashboard in a real headless Chromium against a real `updater run`, engine and registry:
log in, see the watched containers, push new images, see them become available or waiting,
Update now, Approve, Undo (each confirmed; the page follows without a reload), log out.
Screenshots of the main page and an item's history go to the artefacts directory
(UPDATER_ARTEFACTS, else build/artefacts)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from harness import images
from harness.dockerd import Dockerd
from harness.procs import free_port
from harness.registry import Registry
from tests.integration.helpers import ENABLED, wait_until
from tests.integration.helpers import start_daemon as start_updater

pytestmark = [pytest.mark.engine, pytest.mark.slow]
TOKEN = "dashboard-browser-token-0123456789"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 90.0  # a pass with an update or two, on a busy 2-core machine


def artefacts() -> Path:
    folder = Path(os.environ.get("UPDATER_ARTEFACTS")
                  or Path(__file__).resolve().parents[2] / "build" / "artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium that can reach loopback only: everything else goes to a dead proxy."""
    assert shutil.which(CHROMIUM) and shutil.which(DRIVER), \
        "install Debian's chromium and chromium-driver (scripts/setup.sh does)"
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,900", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps", "--disable-extensions",
                     "--disable-domain-reliability", "--no-default-browser-check",
                     "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
                     f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def row_state(driver: WebDriver, name: str) -> str:
    """The state the page shows for `name` (read in one step: the page replaces its rows)."""
    return str(driver.execute_script(
        "const row = document.querySelector(`tr[data-key$='|container|${arguments[0]}']`);"
        "return row ? row.dataset.state : '';", name))


def press(driver: WebDriver, scope: str, label: str) -> None:
    """Press the action `label` in the element `scope` (XPath) and accept its confirmation
    (found again if the page replaced its row meanwhile)."""
    for attempt in range(3):
        try:
            driver.find_element(By.XPATH, f"{scope}//a[normalize-space()='{label}']").click()
            break
        except StaleElementReferenceException:
            if attempt == 2:
                raise
    WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
    driver.switch_to.alert.accept()


def image_of(engine: Dockerd, name: str) -> str:
    return str(engine.client.containers.get(name).attrs["Image"])


def test_log_in_see_update_approve_undo_and_log_out(
        engine: Dockerd, registry: Registry, unique: str, containers: list[str],
        tmp_path: Path, browser: WebDriver) -> None:
    tags = {kind: f"{registry.host}/board/{unique}-{kind}:latest"
            for kind in ("watched", "approved", "plain")}
    labels = {"watched": {**ENABLED, "updater.monitor-only": "true"},
              "approved": {**ENABLED, "updater.approve": "true"}, "plain": ENABLED}
    first = {}
    for kind, tag in tags.items():
        images.release(engine.client, tag, "1")
        first[kind] = engine.client.images.get(tag).id
        containers.append(name := f"{unique}-{kind}")
        engine.client.containers.run(tag, name=name, detach=True, labels=labels[kind])
    port = free_port()
    daemon = start_updater(engine, tmp_path / "home", {
        "interval": "1h", "update_on_start": True, "state_dir": str(tmp_path / "state"),
        "keep_images": 1, "http_api": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    base = f"http://127.0.0.1:{port}"
    driver = browser
    try:
        # Log in: every page sends a stranger to the login first.
        wait_until(lambda: _answers(base), 60, lambda: "the API never answered")
        driver.get(base + "/")
        assert driver.current_url == base + "/login"
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.XPATH, "//button[normalize-space()='Log in']").click()
        WebDriverWait(driver, 10).until(lambda d: d.current_url == base + "/")
        cookie = driver.get_cookie("updater_session")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in driver.page_source and TOKEN not in driver.current_url

        def states() -> dict[str, str]:
            return {kind: row_state(driver, f"{unique}-{kind}") for kind in tags}

        # The page replaces its rows, and an item's page reloads itself, as passes end.
        wait = WebDriverWait(driver, WAIT, poll_frequency=0.5, ignored_exceptions=(
            StaleElementReferenceException, NoSuchElementException))
        wait.until(lambda d: set(states().values()) == {"up-to-date"})

        # Push new images; Update all now: the page follows the pass by itself.
        for tag in tags.values():
            images.release(engine.client, tag, "2", keep_local=False)
        press(driver, "//p[contains(@class,'all')]", "Update all now")
        wait.until(lambda d: states() == {"watched": "update-available",
                                          "approved": "waiting", "plain": "updated"})
        driver.save_screenshot(str(artefacts() / "dashboard-main.png"))
        assert image_of(engine, f"{unique}-watched") == first["watched"]

        # Filters: by state, and by text, in the page.
        Select(driver.find_element(By.ID, "f-state")).select_by_visible_text("waiting")
        shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#items tbody tr")
                 if r.is_displayed()]
        assert [r.get_attribute("data-state") for r in shown] == ["waiting"]
        Select(driver.find_element(By.ID, "f-state")).select_by_index(0)

        # Update now on the monitor-only container: it really moves.
        watched = f'//tr[@data-key="{_key(driver, unique, "watched")}"]'
        press(driver, watched, "Update now")
        wait.until(lambda d: states()["watched"] == "updated")
        assert image_of(engine, f"{unique}-watched") != first["watched"]
        assert engine.client.containers.get(f"{unique}-watched").attrs["State"]["Running"]

        # Approve the waiting update.
        press(driver, f'//tr[@data-key="{_key(driver, unique, "approved")}"]', "Approve")
        wait.until(lambda d: states()["approved"] == "updated")
        approved = image_of(engine, f"{unique}-approved")
        assert approved != first["approved"]

        # A newer image waits again (the approval was for the other); Skip holds it back.
        images.release(engine.client, tags["approved"], "3", keep_local=False)
        press(driver, f'//tr[@data-key="{_key(driver, unique, "approved")}"]', "Update now")
        wait.until(lambda d: states()["approved"] == "waiting")
        press(driver, f'//tr[@data-key="{_key(driver, unique, "approved")}"]', "Skip")
        wait.until(lambda d: states()["approved"] == "held-back")
        assert image_of(engine, f"{unique}-approved") == approved

        # Undo the plain container's update from its page, which shows its history.
        driver.find_element(By.LINK_TEXT, f"{unique}-plain").click()
        wait.until(lambda d: d.find_elements(By.ID, "history"))
        press(driver, "//div[@class='actions']", "Undo last update")
        wait.until(lambda d: "undone" in d.find_element(By.CSS_SELECTOR, ".facts").text)
        assert image_of(engine, f"{unique}-plain") == first["plain"]
        driver.save_screenshot(str(artefacts() / "dashboard-item.png"))
        history = driver.find_element(By.ID, "history").text
        assert "undo-asked" in history and "from the dashboard" in history
        assert "updated" in history

        # On a phone's width the list fits the screen: no sideways scrolling.
        driver.set_window_size(390, 844)
        driver.get(base + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#items tbody tr"))
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        driver.save_screenshot(str(artefacts() / "dashboard-phone.png"))

        # Log out: the page is gone, and so is the session behind the cookie.
        driver.find_element(By.XPATH, "//button[normalize-space()='Log out']").click()
        WebDriverWait(driver, 10).until(lambda d: d.current_url == base + "/login")
        driver.get(base + "/")
        assert driver.current_url == base + "/login"
    finally:
        daemon.terminate()
        output, _ = daemon.communicate(timeout=60)
    assert TOKEN not in output
    assert "dashboard: logged in" in output


def _key(driver: WebDriver, unique: str, kind: str) -> str:
    [row] = driver.find_elements(By.CSS_SELECTOR, f'tr[data-key$="|container|{unique}-{kind}"]')
    return row.get_attribute("data-key") or ""


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
