"""End to end in headless Chromium against uvicorn on 127.0.0.1: sign up, confirm from the captured .eml,
edit preferences, unsubscribe. Needs the Debian packages chromium and chromium-driver (no browser download).

Screenshots go to a temporary folder; set PODBRIEF_SCREENSHOTS=docs/screenshots to refresh the committed ones.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app import config, smtp_sink
from app.db import session_scope
from app.delivery import Outcome, send_delivery
from app.ml.encoder import to_blob
from app.models import Brief, BriefItem, Episode, EpisodeStatus, Insight, Podcast, Subscription, User
from app.pipeline import mail
from tests.test_mail_support import Queue, body, link, read_mails, unit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Read at import: the `env` fixture clears PODBRIEF_* variables before the test runs.
SCREENSHOTS = os.environ.get("PODBRIEF_SCREENSHOTS", "")
REPO = Path(__file__).resolve().parent.parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]

SHOWS = {
    "The Sleep Lab": [
        (
            "Why caffeine lingers",
            754,
            "Caffeine's half-life is five to six hours, so a 3 pm coffee still leaves a "
            "quarter of the dose in your blood at 3 am — enough to cut deep sleep even if you fall asleep fine.",
        ),
        (
            "Naps, done right",
            1201,
            "A nap under 20 minutes avoids deep sleep, so you wake without grogginess; "
            "longer naps only pay off if you can sleep a full 90-minute cycle.",
        ),
    ],
    "Margins": [
        (
            "Pricing power, explained",
            1312,
            "A company has pricing power when it can raise prices 10% without "
            "losing customers; the test is churn after the increase, not gross margin before it.",
        ),
        (
            "What central banks watch",
            402,
            "Central banks care less about this month's inflation print than about "
            "expectations: surveys of what people think prices will do next year move policy more.",
        ),
    ],
    "Build Log": [
        (
            "Postgres at 10 TB",
            2290,
            "Most slow queries they fixed weren't missing indexes but stale statistics: "
            "running ANALYZE after bulk loads turned a 40-second report into 300 milliseconds.",
        ),
    ],
    "Field Notes": [],
}

# Fixtures (site_client, enqueued, mail_sink) live in the support module.
pytest_plugins = ["tests.test_mail_support"]


def _seed(session) -> list[Insight]:  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(3)
    # One topic direction per show stands in for MiniLM: same-topic insights come out as related.
    topics = {title: unit(rng) for title in SHOWS}
    topics["Margins"] = topics["The Sleep Lab"] * 0.1 + unit(rng)
    out = []
    for title, eps in SHOWS.items():
        pod = Podcast(feed_url=f"https://feeds.example/{title.lower().replace(' ', '-')}.xml", title=title)
        session.add(pod)
        session.flush()
        for n, (ep_title, start, text) in enumerate(eps):
            ep = Episode(
                podcast_id=pod.id,
                guid=f"{pod.id}-{n}",
                title=ep_title,
                status=EpisodeStatus.READY,
                enclosure_url=f"https://cdn.example/{pod.id}-{n}.mp3",
            )
            session.add(ep)
            session.flush()
            ins = Insight(
                episode_id=ep.id,
                idx=0,
                start=start,
                end=start + 40,
                text=text,
                substance=0.9,
                embedding=to_blob(unit(rng, topics[title] * 1.5, noise=0.05)),
                embedding_model="test",
            )
            session.add(ins)
            out.append(ins)
    session.flush()
    return out


def _free_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def server(
    db_url: str, mail_sink: smtp_sink.SinkHandle, enqueued: Queue, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """uvicorn in a thread of this process, so the test's stand-in for workers.enqueue is the one used."""
    import uvicorn

    from app.web import site_limits
    from app.web.app import create_app

    sock = _free_port()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("PODBRIEF_BASE_URL", base)
    config.reset_settings()
    site_limits.signup_per_ip.reset()
    site_limits.mails_per_address.reset()
    srv = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield base
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        if IN_CI:
            pytest.fail("chromium and chromium-driver (Debian packages) are required in CI")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument("--window-size=1280,900")
    # A fixed zone for the browser, so the page's Intl time-zone detection is observable.
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": "America/New_York"})
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(30)
    # A click returns before the next page has loaded: lookups wait for their element (up to 10 s).
    driver.implicitly_wait(10)
    try:
        yield driver
    finally:
        driver.quit()


def _navigate(driver, element) -> None:  # type: ignore[no-untyped-def]
    """Click a link or submit button and wait until the next page has replaced this one.

    Without the wait, a find right after the click can get the old page's element, which then goes stale
    mid-read (seen on a loaded CI machine). The old page is recognised by a mark set on its window object, which a
    new document does not have. Selenium's `staleness_of` is not used: while the old document is being torn down
    Chrome can answer its element check with "Node with given id does not belong to the document" (an unknown
    error, not StaleElementReference), which failed a CI run; here any error while the page is changing just means
    "ask again".
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__podbriefOldPage = true;")
    element.click()
    WebDriverWait(driver, 20, ignored_exceptions=(WebDriverException,)).until(
        lambda drv: drv.execute_script(
            "return window.__podbriefOldPage === undefined && document.readyState === 'complete';"
        )
    )


def _shot(driver, path: Path) -> None:  # type: ignore[no-untyped-def]
    height = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    # Headless window size includes a little browser chrome: pad so the page bottom isn't cut off.
    driver.set_window_size(1280, min(max(int(height) + 160, 700), 4000))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    assert path.stat().st_size > 10_000  # a real render, not a blank page


@pytest.mark.timeout(240)
def test_signup_confirm_preferences_unsubscribe(
    server: str,
    browser,
    mail_sink: smtp_sink.SinkHandle,
    enqueued: Queue,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = REPO / SCREENSHOTS if SCREENSHOTS else tmp_path / "shots"
    d = browser
    with session_scope() as s:
        insights = _seed(s)
        pod_ids = {p.title: p.id for p in s.scalars(select(Podcast))}

    d.get(server + "/")
    assert "top 5 insights daily" in d.page_source
    tz = d.find_element(By.NAME, "timezone")
    assert tz.get_attribute("value") == "America/New_York"  # filled in by the Intl snippet
    _shot(d, shots / "landing.png")

    d.find_element(By.NAME, "email").send_keys("ada@example.com")
    d.find_element(By.NAME, "interests").send_keys("sleep science, how central banks think")
    Select(d.find_element(By.NAME, "delivery_hour")).select_by_value("6")
    _navigate(d, d.find_element(By.CSS_SELECTOR, "form[action='/signup'] button[type=submit]"))
    assert "Check your inbox" in d.find_element(By.TAG_NAME, "h1").text

    [confirmation] = read_mails(mail_sink.mail_dir)
    d.get(link(body(confirmation), "/confirm/"))
    assert "You're in" in d.find_element(By.TAG_NAME, "h1").text
    with session_scope() as s:
        user = s.scalar(select(User).where(User.email == "ada@example.com"))
        assert user is not None and user.confirmed_at is not None
        assert (user.timezone, user.delivery_hour) == ("America/New_York", 6)
        uid, secret = user.id, user.token
    assert enqueued.named("build_and_send_brief") and enqueued.named("build_and_send_brief")[0][0] == uid

    _navigate(d, d.find_element(By.LINK_TEXT, "Fine-tune preferences"))
    box = d.find_element(By.NAME, "interests")
    box.clear()
    box.send_keys("sleep science, monetary policy, databases")
    d.find_element(By.CSS_SELECTOR, f"input[name=podcasts][value='{pod_ids['Margins']}']").click()
    Select(d.find_element(By.NAME, "delivery_hour")).select_by_value("7")
    _navigate(d, d.find_element(By.XPATH, "//button[normalize-space()='Save preferences']"))
    assert "Saved" in d.find_element(By.CSS_SELECTOR, ".alert.ok").text
    _shot(d, shots / "preferences.png")
    with session_scope() as s:
        u = s.get_one(User, uid)
        assert (u.interests, u.delivery_hour) == ("sleep science, monetary policy, databases", 7)
        assert s.scalars(select(Subscription.podcast_id).where(Subscription.user_id == uid)).all() == [
            pod_ids["Margins"]
        ]

    # The brief email as a mail site_client would render it (built, sent through SMTP, read back from the .eml).
    with session_scope() as s:
        brief = Brief(user_id=uid, local_date=dt.date(2026, 11, 26))
        s.add(brief)
        s.flush()
        for pos, ins in enumerate(insights[:5]):
            s.add(
                BriefItem(
                    brief_id=brief.id,
                    insight_id=ins.id,
                    position=pos,
                    score=1 - pos / 10,
                    why=[
                        "Matches “sleep science”",
                        "Matches “sleep science”",
                        "Close to “monetary policy”",
                        "Matches “monetary policy” · from a show you follow",
                        "Matches “databases”",
                    ][pos],
                )
            )
        did = mail.ensure_delivery(s, brief.id)
    assert send_delivery(did) == Outcome.SENT
    brief_mail = read_mails(mail_sink.mail_dir)[-1]
    html_file = tmp_path / "brief.html"
    html_file.write_text(body(brief_mail, "html"), encoding="utf-8")
    d.get(html_file.as_uri())
    assert len(d.find_elements(By.PARTIAL_LINK_TEXT, "Listen from")) == 5
    _shot(d, shots / "brief-email.png")

    d.get(f"{server}/u/{secret}/briefs/2026-11-26")
    assert len(d.find_elements(By.CSS_SELECTOR, ".insight")) == 5
    _navigate(d, d.find_elements(By.LINK_TEXT, "Related insights")[0])
    related = d.find_elements(By.CSS_SELECTOR, ".insight")
    assert related and "Naps, done right" in related[0].text  # the same-topic neighbour comes first
    _shot(d, shots / "insight.png")

    d.get(f"{server}/unsubscribe/{secret}")
    with session_scope() as s:
        assert s.get_one(User, uid).unsubscribed_at is None  # viewing the page changes nothing
    _navigate(d, d.find_element(By.XPATH, "//button[normalize-space()='Unsubscribe']"))
    assert "unsubscribed" in d.find_element(By.TAG_NAME, "h1").text
    with session_scope() as s:
        assert s.get_one(User, uid).unsubscribed_at is not None
