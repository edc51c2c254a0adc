"""The console in a real browser: Debian's headless Chromium driven by Selenium, against
the real app (a live server on its own loop and thread), MariaDB and the fake peers.

The page lists executions, launches a dry run whose counts it shows, shows a hostile
dong name from a peer's answer as text without running it, and (once the stop endpoint
exists) stops a running fan-out. The browser log must hold no CSP violation and no
script error. A screenshot goes to var/console.png.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.edges.db import fetch_all
from app.web.console import CONSOLE_PATH
from tests.conftest import DATA_TABLES, DB_SERVER
from tests.integration import rabbit
from tests.integration.test_web_api import token
from tests.reliability.support_web import LiveApp, live_app
from tests.settings import make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "console.png"
WAIT_SECONDS = 30

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/bootstrap installs them)",
)

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
# The store service answers these for stores 3 and 4: too long for top_dong, so the
# answer breaks the contract and the stats run fails with the name in its exit message.
HOSTILE = {IMG: "2025-09-01", SCRIPT: "2025-08-01"}  # name -> run date of a member there
STORES = {1: "상도동", 2: "풍무동", 3: IMG + "x" * 300, 4: SCRIPT + "x" * 300}

# The fan-out dry run of 2025-10-26 10:00: five members' latest stats have top_hour 10.
DRY_RUN_DATE, DRY_RUN_HOUR = "2025-10-26", 10
DRY_RUN_STATS = [
    (101, "상도동"),  # one token, store 1 has an active event: 1 message
    (102, "상도동"),  # two tokens: 2 messages
    (103, "풍무동"),  # store 2's event has ended: filtered
    (104, "상도동"),  # no token: filtered
    (105, "신림동"),  # no store in the dong: filtered
]
DRY_RUN_COUNTS = {"read": "5", "written": "2", "filtered": "3", "skipped": "0"}

# A long fan-out to stop: 200 members, two a chunk, each chunk's token lookup slowed.
STOP_DATE, STOP_HOUR = "2025-10-20", 9
STOP_MEMBERS = range(2001, 2201)

TOKENS = {101: ["t-101"], 102: ["t-102a", "t-102b"], 103: ["t-103"], 105: ["t-105"]}
TOKENS.update({m: [f"t-{m}"] for m in STOP_MEMBERS})

ROW = """
const row = document.querySelector(`#rows tr[data-id="${arguments[0]}"]`);
if (!row) return null;
const text = (selector) => row.querySelector(selector)?.textContent ?? null;
return {
  status: text("td.status .badge"), job: text("td.job"), params: text("td.params"),
  read: text("td.read"), written: text("td.written"), filtered: text("td.filtered"),
  skipped: text("td.skipped"), message: text("td.message"),
  title: row.querySelector("td.message").title,
  dry: row.querySelector(".tag.dry") !== null,
  progress: row.querySelector("progress").checkVisibility(),
  actions: [...row.querySelectorAll("button[data-action]")].map((b) => b.dataset.action),
};
"""


# ---- the app, its data, the browser --------------------------------------------------


async def _reset(app: LiveApp) -> None:
    """Empty tables, then the rows every test of this module reads."""
    pool = app.launcher.resources.pool
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in DATA_TABLES:
            await cur.execute(f"TRUNCATE TABLE {table}")
        await cur.execute("SET FOREIGN_KEY_CHECKS = 1")
        histories = [(201 + m, 1, f"2025-10-2{i} 15:00:00") for m in range(3) for i in range(5)]
        histories += [(204, 1, "2025-10-21 15:00:00"), (204, 1, "2025-10-22 15:00:00")]
        for member, (name, day) in enumerate(HOSTILE.items(), start=301):
            store = 3 if name == IMG else 4
            histories += [(member, store, f"{day} 0{i}:00:00") for i in range(5)]
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, 1, %s, 1, 'USED', %s)",
            histories,
        )
        stats = [(m, dong, DRY_RUN_HOUR, DRY_RUN_DATE) for m, dong in DRY_RUN_STATS]
        stats += [(m, "상도동", STOP_HOUR, STOP_DATE) for m in STOP_MEMBERS]
        await cur.executemany(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (%s, %s, %s, %s)",
            stats,
        )
        await cur.executemany(
            "INSERT INTO coupon_events (store_id, event_start_at, event_end_at, total_count,"
            " issued_count) VALUES (%s, %s, %s, 100, 0)",
            [(1, "2025-10-01", "2025-10-31"), (2, "2025-10-01", "2025-10-20")],
        )


@pytest.fixture(scope="module")
def app(database: str, vhost: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    asyncio.run(rabbit.declare_consumer_queue(vhost))
    settings = make_settings(DB_URL=f"{DB_SERVER}/{database}")
    with live_app(
        settings,
        STORES,
        tokens=TOKENS,
        broker=True,
        RABBITMQ_VHOST=vhost,
        DRY_RUN_DIR=tmp_path_factory.mktemp("dry-run"),
        SCHEDULER_ENABLED="false",
        SKIP_LIMIT=0,  # a chunk the store service answers badly fails the run
        CHUNK_SIZE=2,
        ENRICH_WORKERS=1,
        QUEUE_SIZE=1,
    ) as live:
        live.run(_reset(live))
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1500,1000",
        "--lang=en-US",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs (it would download).
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """`condition`'s first truthy answer; an element the page redrew meanwhile is looked
    up again on the next try."""
    wait = WebDriverWait(
        driver,
        WAIT_SECONDS,
        poll_frequency=0.1,
        ignored_exceptions=[StaleElementReferenceException],
    )
    return wait.until(condition, what)


def open_console(driver: WebDriver, app: LiveApp) -> None:
    """The page, with the token pasted (once per tab: sessionStorage keeps it)."""
    driver.get(f"{app.url}{CONSOLE_PATH}")
    state = driver.find_element(By.ID, "token-state")
    if state.text == "no token":
        driver.find_element(By.ID, "token").send_keys(token(expires_in=3600))
        driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    wait_for(driver, lambda d: state.text.startswith("token set (operator"), "the token set")


def row(driver: WebDriver, execution_id: int) -> dict[str, Any] | None:
    return driver.execute_script(ROW, execution_id)


def row_when(driver: WebDriver, execution_id: int, statuses: tuple[str, ...]) -> dict[str, Any]:
    def shown(d: WebDriver) -> dict[str, Any] | None:
        found = row(d, execution_id)
        return found if found is not None and found["status"] in statuses else None

    return wait_for(driver, shown, f"execution {execution_id} shown {'/'.join(statuses)}")


def status_line(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "status").text


def launched_id(driver: WebDriver, earlier: Collection[int] = ()) -> int:
    """The execution the status line reports as launched (not one of `earlier`)."""

    def reported(d: WebDriver) -> int | None:
        text = status_line(d)
        if "launched execution " not in text:
            return None
        execution_id = int(text.split("launched execution ", 1)[1].split(":", 1)[0])
        return None if execution_id in earlier else execution_id

    return wait_for(driver, reported, "a launch reported")


def browser_problems(driver: WebDriver) -> list[str]:
    """CSP violations and script errors the browser logged since the last call."""
    marks = ("Content Security Policy", "Refused to", "Uncaught", "SyntaxError", "TypeError")
    return [
        e["message"] for e in driver.get_log("browser") if any(m in e["message"] for m in marks)
    ]


def set_date(driver: WebDriver, form: str, value: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{form} input[name=runDate]")
    driver.execute_script("arguments[0].value = arguments[1]", field, value)


def api_launch(app: LiveApp, query: str) -> int:
    headers = {"Authorization": f"Bearer {token()}"}
    resp = requests.post(f"{app.url}/api/v1/jobs/{query}", headers=headers, timeout=10)
    assert resp.status_code == 202, resp.text
    return resp.json()["executionId"]


# ---- the tests ----------------------------------------------------------------------------


def test_the_page_lists_executions_under_its_policy(app: LiveApp, browser: WebDriver) -> None:
    # not the dry run's date: a stats run replaces every row of its date
    stats_id = api_launch(app, "coupon-usage-stats?runDate=2025-10-27")
    open_console(browser, app)

    shown = row_when(browser, stats_id, ("COMPLETED",))
    assert shown == {
        "status": "COMPLETED",
        "job": "usage stats",
        "params": "runDate=2025-10-27",
        "read": "4",
        "written": "3",
        "filtered": "1",
        "skipped": "0",
        "message": "",
        "title": "",
        "dry": False,
        "progress": False,
        "actions": [],
    }
    assert browser_problems(browser) == []
    # The policy is in force: an inline script added now does not run, and is reported.
    ran = browser.execute_script(
        "const s = document.createElement('script');"
        " s.textContent = 'window.__inline = 1'; document.body.append(s);"
        " return window.__inline === 1;"
    )
    assert ran is False
    assert any("Content Security Policy" in p for p in browser_problems(browser))

    # The token is in this tab's sessionStorage only: no cookie, nothing in the URL.
    assert browser.get_cookies() == []
    assert browser.current_url == f"{app.url}{CONSOLE_PATH}"
    assert browser.execute_script("return window.localStorage.length") == 0


def test_a_dry_run_launched_from_the_page_shows_its_counts(
    app: LiveApp, browser: WebDriver
) -> None:
    open_console(browser, app)
    set_date(browser, "launch-fanout", DRY_RUN_DATE)
    Select(browser.find_element(By.CSS_SELECTOR, "#launch-fanout select")).select_by_value(
        str(DRY_RUN_HOUR)
    )
    assert browser.find_element(By.CSS_SELECTOR, "#launch-fanout input[name=dryRun]").is_selected()
    browser.find_element(By.CSS_SELECTOR, "#launch-fanout button[type=submit]").click()
    execution_id = launched_id(browser)

    shown = row_when(browser, execution_id, ("COMPLETED", "FAILED", "STOPPED"))
    assert shown["status"] == "COMPLETED", shown
    assert {k: shown[k] for k in DRY_RUN_COUNTS} == DRY_RUN_COUNTS
    assert shown["job"] == "push fan-out"
    assert shown["params"] == f"runDate={DRY_RUN_DATE} targetHour={DRY_RUN_HOUR} dry run"
    assert shown["dry"] is True

    # the launch selected it: its details, with its step's counts and checkpoint
    title = browser.find_element(By.ID, "details-title")
    wait_for(browser, lambda d: title.text.startswith(f"Execution {execution_id} "), "details")
    assert title.text == f"Execution {execution_id} · couponUsageStatsFcmSendJob · dry run"
    step = wait_for(
        browser,
        lambda d: [c.text for c in d.find_elements(By.CSS_SELECTOR, "#steps td")] or None,
        "the step row",
    )
    assert step[:8] == ["couponUsageStatsFcmSendStep", "COMPLETED", "5", "2", "3", "0", "3", "105"]

    # what the page showed is what the API says
    ((read, written, filtered),) = app.run(
        fetch_all(
            app.launcher.resources.pool,
            "SELECT READ_COUNT, WRITE_COUNT, FILTER_COUNT FROM BATCH_STEP_EXECUTION"
            " WHERE JOB_EXECUTION_ID = %s",
            (execution_id,),
        )
    )
    assert (read, written, filtered) == (5, 2, 3)
    assert browser_problems(browser) == []


def test_a_hostile_dong_name_shows_as_text_and_never_runs(app: LiveApp, browser: WebDriver) -> None:
    open_console(browser, app)
    ids = {}
    for name, day in HOSTILE.items():
        set_date(browser, "launch-stats", day)
        browser.find_element(By.CSS_SELECTOR, "#launch-stats button[type=submit]").click()
        ids[name] = launched_id(browser, ids.values())

    for name, execution_id in ids.items():
        shown = row_when(browser, execution_id, ("COMPLETED", "FAILED", "STOPPED"))
        assert shown["status"] == "FAILED"
        assert shown["message"].startswith("SkipLimitExceeded: skip limit exceeded")
        assert name in shown["message"]
        assert shown["title"] == shown["message"]
        assert shown["actions"] == ["restart", "abandon"]

        # the whole message in the details, visible as the characters it is made of
        browser.find_element(By.CSS_SELECTOR, f'#rows tr[data-id="{execution_id}"] td.id').click()
        wait_for(
            browser,
            lambda d, n=name: n in d.find_element(By.CSS_SELECTOR, "pre.exit-message").text,
            "the message in the details",
        )
        message = browser.find_element(By.CSS_SELECTOR, "#details-fields pre.exit-message")
        assert message.is_displayed()
        assert name in message.text  # the rendered text: the characters, not markup

    assert browser.execute_script("return window.__pwned") is None
    markup = browser.find_elements(By.CSS_SELECTOR, "#rows img, #rows script, #details img")
    assert markup == [] and len(browser.find_elements(By.TAG_NAME, "script")) == 1
    assert browser_problems(browser) == []
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))


def test_a_running_fan_out_stopped_from_the_page_ends_stopped(
    app: LiveApp, browser: WebDriver
) -> None:
    app.fake.control.update({"latency_ms": 100})
    try:
        open_console(browser, app)
        set_date(browser, "launch-fanout", STOP_DATE)
        Select(browser.find_element(By.CSS_SELECTOR, "#launch-fanout select")).select_by_value(
            str(STOP_HOUR)
        )
        browser.find_element(By.CSS_SELECTOR, "#launch-fanout input[name=dryRun]").click()
        browser.find_element(By.CSS_SELECTOR, "#launch-fanout button[type=submit]").click()
        execution_id = launched_id(browser)
        shown = row_when(browser, execution_id, ("STARTED", "COMPLETED", "FAILED"))
        assert shown["status"] == "STARTED", shown
        assert shown["dry"] is False
        assert shown["actions"] == ["stop"]
        assert shown["progress"] is True

        browser.find_element(
            By.CSS_SELECTOR, f'#rows tr[data-id="{execution_id}"] button[data-action=stop]'
        ).click()
        answered = wait_for(
            browser,
            lambda d: status_line(d) if "stop" in status_line(d) else None,
            "the stop answered",
        )
        assert answered.endswith(f"stop requested for execution {execution_id}"), answered
        shown = row_when(browser, execution_id, ("STOPPED", "COMPLETED", "FAILED"))
        assert shown["status"] == "STOPPED"
        assert int(shown["read"]) < len(STOP_MEMBERS)
        assert shown["actions"] == ["restart", "abandon"]
        assert browser_problems(browser) == []
    finally:
        app.fake.control.update({"latency_ms": 0})  # a run left running ends at once
