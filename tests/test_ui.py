"""The operator page (/ui) in a real headless browser against a real daemon, and its event feed.

The browser is Debian's ``chromium`` driven by Playwright through ``executable_path`` (Playwright
never downloads a browser here); the daemon is the real ``edge-face run`` of ``api_daemon``.
Each step of the browser flow leaves a screenshot in the test's temporary directory.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_daemon import ApiDaemon, consent, make_daemon, new_person, run_cli
from mqtt_broker import Broker
from PIL import Image

from edge.demo.clip import write_clip
from edge.events.recent import RecentEvents

#: Playwright's waits (not assertions on speed): generous for a loaded 2-core machine.
WAIT_MS = 60_000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed: run `make test` (it installs it) or "
                "`sudo apt-get install chromium`", pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: the tests may run as root (CI does), where chromium's sandbox refuses.
        b = pw.chromium.launch(executable_path=_chromium(), headless=True,
                               args=["--no-sandbox", "--disable-gpu",
                                     "--disable-dev-shm-usage"])  # containers: a small /dev/shm
        yield b
        b.close()


# ---------------------------------------------------------------------------- the feed

def test_recent_events_keep_ids_not_labels() -> None:
    ring = RecentEvents(capacity=3)
    for seq in range(1, 6):
        ring.add(seq, {"event_id": f"e{seq}", "type": "recognized", "person_id": "p_1",
                       "label": "Ada", "device_id": "door", "time": "t", "camera_id": "c"})
    events, truncated = ring.after(0, 10)
    assert [e["seq"] for e in events] == [3, 4, 5] and not truncated  # the oldest fell out
    assert all("label" not in e and "device_id" not in e for e in events)
    newest, truncated = ring.after(3, 1)
    assert [e["seq"] for e in newest] == [5] and truncated
    assert ring.after(5, 10) == ([], False)
    first, truncated = ring.after(0, 2)  # a page's first poll wants the latest, skips nothing
    assert [e["seq"] for e in first] == [4, 5] and not truncated
    with pytest.raises(ValueError, match="at least 1"):
        RecentEvents(capacity=0)


def test_the_feeds_schema_lists_exactly_the_fields_the_ring_keeps() -> None:
    from edge.api.routes.events import EventSummary
    from edge.events.recent import FEED_FIELDS

    assert set(EventSummary.model_fields) == {"seq", *FEED_FIELDS}


def test_events_route_needs_a_token_and_checks_input(station: ApiDaemon) -> None:
    with station.client() as anon:
        assert anon.get("/v1/events").status_code == 401
    with station.client(station.token("ui-reader", "read")) as ro:
        r = ro.get("/v1/events")
        assert r.status_code == 200, r.text
        feed = r.json()
        # A station has no camera: nothing happened, and the cursor stays where it was.
        assert feed == {"events": [], "next_after": 0, "truncated": False}
        assert ro.get("/v1/events", params={"after": 7}).json()["next_after"] == 7
        for bad in ({"after": -1}, {"limit": 0}, {"limit": 201}, {"after": "x"}):
            assert ro.get("/v1/events", params=bad).status_code == 422, bad
    with station.client() as anon:
        spec = anon.get("/openapi.json").json()
    assert "/v1/events" in spec["paths"]
    assert not any(p.startswith("/ui") for p in spec["paths"])


# ---------------------------------------------------------------------------- the page

def test_page_is_self_contained_under_a_strict_policy(station: ApiDaemon) -> None:
    with station.client() as anon:
        page = anon.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        html = page.text
        assert anon.get("/ui/").text == html
        for asset, kind in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
            r = anon.get(asset)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), asset
            assert r.headers["content-security-policy"] == csp
            assert "http://" not in r.text and "https://" not in r.text, asset  # no CDN
        for path in ("/ui/index.html", "/ui/../pyproject.toml", "/ui/app.py", "/ui/x.js"):
            assert anon.get(path).status_code == 404, path
    # No inline script or style, no handler attributes, nothing fetched from elsewhere.
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all(re.search(r'\bsrc="/ui/', s) for s in scripts)
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html)
    assert not re.search(r"\s(on\w+|style)=", html)
    assert "http://" not in html and "https://" not in html


def test_a_wheel_ships_the_page() -> None:
    """A device installs the wheel, not a checkout: the page's files must be in it."""
    from hatchling.builders.wheel import WheelBuilder

    root = Path(__file__).resolve().parents[1]
    shipped = {f.distribution_path for f in WheelBuilder(str(root)).recurse_included_files()}
    for name in ("index.html", "app.js", "app.css"):
        assert f"edge/api/ui/{name}" in shipped, name


def _no_image_bytes_on_disk(workdir: Path, photo: Path) -> None:
    """The photo went to the device and nowhere: no file of the device holds a piece of it."""
    data = photo.read_bytes()
    pieces = [data[i:i + 64] for i in (len(data) // 4, len(data) // 2)]
    for f in workdir.rglob("*"):
        if f.is_file() and f.name != "daemon.log":
            content = f.read_bytes()
            assert not any(p in content for p in pieces), f


def test_operator_flow_in_a_browser(station: ApiDaemon, browser: Any, fixture_dir: Path,
                                    tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    step = iter(range(1, 100))

    def shot(page: Any, name: str) -> None:
        page.screenshot(path=str(shots / f"{next(step):02d}-{name}.png"), full_page=True)

    # A fixed zone an hour off UTC: the expiry typed in local time must reach the API in UTC.
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    # Chromium logs each 4xx answer as "Failed to load resource"; the refusals are the test's
    # own. Anything else logged as an error (a script error, a CSP violation) fails the test.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{station.base_url}/ui")

    # A wrong token: refused with the device's reason, nothing kept.
    page.get_by_label("API token").fill("eft_not-a-token-of-this-device-at-all-0000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("unknown token")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('edge-face-token')") is None
    shot(page, "wrong-token")

    # The right token, typed and sent with the keyboard.
    page.get_by_label("API token").fill(station.token("ui-operator"))
    page.get_by_label("API token").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#health-list")).to_contain_text("yes")
    expect(page.locator("#health-list")).to_contain_text("broker")
    # An enrollment station has no camera: its feed says so rather than stay blank.
    expect(page.locator("#events-note")).to_contain_text("No events yet")
    shot(page, "signed-in")

    # A new person with consent, enrolled from a fixture photo.
    photo = fixture_dir / "obama.jpg"
    page.get_by_label("Label (optional, stays on the device)").fill("Browser Visitor")
    page.get_by_label("Consent given by").fill("the visitor")
    page.get_by_label("Purpose").fill("front door")
    page.get_by_label("Consent expires (your local time; empty: no expiry)").fill(
        "2099-01-01T12:00")
    page.get_by_label("Photos (each must show one face)").set_input_files(str(photo))
    page.get_by_role("button", name="Enroll", exact=True).click()
    result = page.locator("#enroll-result")
    expect(result).to_contain_text("1 template(s) added")
    expect(result).to_contain_text("obama.jpg")
    expect(result).to_contain_text("accepted")
    pid = re.search(r"Person (p_[0-9a-z]+)", result.inner_text())
    assert pid, result.inner_text()
    person_id = pid.group(1)
    shot(page, "enrolled")

    # Listed, with its consent state and expiry; the API agrees.
    row = page.locator(f'tr[data-person="{person_id}"]')
    expect(row).to_contain_text("Browser Visitor")
    expect(row).to_contain_text("active")
    expect(row.locator("td").nth(3)).to_contain_text("2099")
    expect(row.locator("td").nth(4)).to_have_text("1")
    with station.admin() as api:
        held = api.get(f"/v1/persons/{person_id}").json()
    assert held["consent"] == "active" and len(held["templates"]) == 1
    assert held["consents"][0]["expires_at"] == "2099-01-01T11:00:00.000000Z"
    # Every control (the row's buttons too) has a name a screen reader can say.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, button')]
        .filter((e) => !(e.labels && e.labels.length) && !e.textContent.trim()
                       && !e.getAttribute('aria-label'))
        .map((e) => e.outerHTML)""")
    assert unnamed == []
    shot(page, "listed")

    # A photo without a face gets its reason, per photo, for the same person.
    page.get_by_label("Person", exact=True).select_option(person_id)
    expect(page.locator("#new-person")).to_be_hidden()
    blank = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank, "JPEG")
    page.get_by_label("Photos (each must show one face)").set_input_files(
        files=[{"name": "wall.jpg", "mimeType": "image/jpeg", "buffer": blank.getvalue()}])
    page.get_by_role("button", name="Enroll", exact=True).click()
    expect(result).to_contain_text("0 template(s) added")
    expect(result.locator("tbody tr")).to_contain_text("wall.jpg")
    expect(result.locator("tbody tr")).to_contain_text("refused")
    expect(page.locator("#status")).to_contain_text("No photo was usable")
    shot(page, "refused-photo")

    # Withdrawing consent removes the templates at once.
    page.get_by_role("button", name="Withdraw consent of Browser Visitor").click()
    expect(page.locator("#status")).to_contain_text("1 template(s) removed")
    expect(row).to_contain_text("withdrawn")
    expect(row.locator("td").nth(4)).to_have_text("0")
    shot(page, "withdrawn")

    # Erasure, from the keyboard, with the receipt on the page and the focus on it.
    page.get_by_role("button", name="Delete Browser Visitor").focus()
    page.keyboard.press("Enter")
    receipt = page.locator("#receipt")
    expect(receipt).to_contain_text(person_id)
    expect(receipt).to_contain_text("Audit hash")
    expect(page.locator("#receipt-h")).to_be_focused()
    expect(row).to_have_count(0)
    # The enrollment result named the erased person: it goes with them.
    expect(result).to_be_empty()
    with station.admin() as api:
        assert api.get(f"/v1/persons/{person_id}").status_code == 404
        last = api.get("/v1/audit", params={"target_id": person_id}).json()["entries"][-1]
    assert last["action"] == "person_deleted"
    expect(receipt).to_contain_text(last["hash"])
    expect(receipt).to_contain_text(f"#{last['seq']}")
    shot(page, "receipt")

    # The browser keeps the token in this tab and nothing else: no cookie, no localStorage.
    stored = page.evaluate("""() => ({local: localStorage.length, cookie: document.cookie,
        session: Object.keys(sessionStorage)})""")
    assert stored == {"local": 0, "cookie": "", "session": ["edge-face-token"]}, stored
    # Signing out forgets the token and what the page showed (the receipt names the person).
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#receipt-section")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    assert person_id not in page.content()
    # A reload keeps a signed-in session (the token is in the tab), then sign out for good.
    page.get_by_label("API token").fill(station.token("ui-operator"))
    page.get_by_label("API token").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    page.reload()
    expect(page.locator("#app")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('edge-face-token')") is None
    context.close()

    assert not problems, problems  # no script error, no Content-Security-Policy violation
    # Same origin, and nothing but the page's files, the public API and the health checks.
    allowed = re.compile(re.escape(station.base_url)
                         + r"/(ui(/(app\.js|app\.css)?)?|v1/.*|healthz|readyz|favicon\.ico)")
    assert requested and all(allowed.fullmatch(u) for u in requested), requested
    assert any("/v1/events?after=" in u for u in requested)
    assert len(list(shots.glob("*.png"))) == 7
    _no_image_bytes_on_disk(station.workdir, photo)


def test_read_token_sees_but_cannot_change(station: ApiDaemon, browser: Any,
                                           tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with station.admin() as api:
        pid = new_person(api, "Read Only View")
        api.post(f"/v1/persons/{pid}/consents", json=consent(purpose="renewal"))
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{station.base_url}/ui")
    page.get_by_label("API token").fill(station.token("ui-viewer", "read"))
    page.get_by_role("button", name="Sign in").click()
    row = page.locator(f'tr[data-person="{pid}"]')
    expect(row).to_contain_text("never")  # consents without an end
    page.get_by_role("button", name="Delete Read Only View").click()
    expect(page.locator("#status")).to_contain_text("scope 'read'")
    page.screenshot(path=str(tmp_path / "read-only-refused.png"))
    with station.admin() as api:
        assert api.get(f"/v1/persons/{pid}").status_code == 200
    # Revoked while signed in: the next call is refused and the page goes back to sign-in,
    # forgetting the token.
    run_cli(station.env, "token", "revoke", "ui-viewer")
    station.tokens.pop("ui-viewer")
    page.get_by_role("button", name="Refresh list").click()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("unknown token")
    assert page.evaluate("sessionStorage.getItem('edge-face-token')") is None
    page.screenshot(path=str(tmp_path / "revoked.png"))
    context.close()


@pytest.fixture
def door(tmp_path: Path, models_dir: Path, fixture_dir: Path,
         module_broker: Broker) -> Iterator[ApiDaemon]:
    """A door with a camera: a looped clip of one visitor, played in real time. Its MQTT events
    carry the label (``include_label``), so the feed's leaving it out is put to the test."""
    clip = write_clip([fixture_dir / "obama3.jpg"], tmp_path / "door.avi")
    daemon = make_daemon(tmp_path / "door", models_dir, module_broker,
                         EDGE_FACE_CAMERA__SOURCE=str(clip), EDGE_FACE_CAMERA__LOOP="true",
                         EDGE_FACE_CAMERA__REALTIME="true",
                         EDGE_FACE_EVENTS__INCLUDE_LABEL="true")
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


def test_live_feed_shows_the_door_in_a_browser(door: ApiDaemon, browser: Any,
                                               fixture_dir: Path, tmp_path: Path) -> None:
    """The visitor is unknown until enrolled on the page; then the feed names their id."""
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{door.base_url}/ui")
    page.get_by_label("API token").fill(door.token("ui-door"))
    page.get_by_role("button", name="Sign in").click()
    feed = page.locator("#event-list")
    expect(feed).to_contain_text("camera cam0 open")
    expect(feed).to_contain_text("unknown face")
    expect(page.locator("#events-note")).to_have_text(
        "Person ids only; the names stay in the gallery.")
    expect(page.locator("#health-list")).to_contain_text("camera")
    page.screenshot(path=str(tmp_path / "01-feed-unknown.png"), full_page=True)

    page.get_by_label("Label (optional, stays on the device)").fill("Feed Visitor")
    page.get_by_label("Consent given by").fill("the visitor")
    page.get_by_label("Purpose").fill("front door")
    page.get_by_label("Photos (each must show one face)").set_input_files(
        str(fixture_dir / "obama.jpg"))
    page.get_by_role("button", name="Enroll", exact=True).click()
    result = page.locator("#enroll-result")
    expect(result).to_contain_text("1 template(s) added")
    found = re.search(r"Person (p_[0-9a-z]+)", result.inner_text())
    assert found, result.inner_text()
    # The next pass of the clip is a new track, decided against the gallery that now has them.
    expect(feed).to_contain_text(f"recognized {found.group(1)}")
    assert "Feed Visitor" not in feed.inner_text()  # ids only, never the label
    page.screenshot(path=str(tmp_path / "02-feed-recognized.png"), full_page=True)
    context.close()
    with door.client(door.token("ui-door")) as api:
        events = api.get("/v1/events", params={"limit": 200}).json()["events"]
    assert {e["type"] for e in events} >= {"camera", "unknown", "recognized"}
    assert all("label" not in e for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
