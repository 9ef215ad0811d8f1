"""The web page (web-client/) in a real headless Chromium, against the server running in-process.

Debian's chromium (/usr/bin/chromium, apt package `chromium`) is driven by Playwright; Playwright's
own browser downloads are never used. Without chromium these tests are skipped, except under CI
(CI=true), where they fail. The server runs the tiny random model, so continuations are fast.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from server_helpers import running_server

from ai_writer.generation.sampler import SamplerSettings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without these Chromium keeps trying to reach Google's services.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPENING = "这是一颗魔法，林黛玉竟如此精妙。\n三体舰队众人惊。"  # characters of the tiny model's vocabulary
DEFAULTS = SamplerSettings(temperature=0.9)  # not the built-in 1.0: the page must show the server's defaults
DEFAULT_CHARS = 120
TOKEN = "s3cret-token"


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) for the web page tests"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing_browser()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tiny_model, one_torch_thread):
    with running_server(tiny_model, defaults=DEFAULTS, default_chars=DEFAULT_CHARS) as serving:
        yield serving


@pytest.fixture(scope="module")
def token_server(tiny_model, one_torch_thread):
    with running_server(tiny_model, token=TOKEN) as serving:
        yield serving


class Page:
    """A browser tab on the web page, with what the tests look at."""

    def __init__(self, page, server):
        self.page, self.server = page, server
        self.requests = []  # the POST /api/continue requests, in order
        self.failed = []  # requests that did not complete (aborted ones included)
        self.errors = []  # uncaught JavaScript errors
        page.on("request", lambda r: self.requests.append(r) if r.url.endswith("/api/continue") else None)
        page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, connected: bool = True):
        self.page.goto(self.server.url)
        if connected:
            self.page.wait_for_selector("#connection[data-state=ok]")
        return self

    @property
    def text(self) -> str:
        return self.page.input_value("#editor")

    @property
    def status(self) -> str:
        return self.page.inner_text("#status")

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].post_data)

    def setting(self, name: str, value) -> None:
        if not self.page.is_visible(f"#setting-{name}"):
            self.page.click("#settings-toggle")
        if isinstance(value, bool):
            self.page.set_checked(f"#setting-{name}", value)
        else:
            self.page.fill(f"#setting-{name}", str(value))
            self.page.press(f"#setting-{name}", "Tab")  # a change event, as when the writer moves on

    def write(self, text: str) -> None:
        self.page.fill("#editor", text)

    def run(self, button: str = "#continue", key: str | None = None) -> None:
        """Continue or rewrite (by button or shortcut) and wait until the request has ended."""
        count = len(self.requests)
        if key:
            self.page.keyboard.press(key)
        else:
            self.page.click(button)
        self.page.wait_for_function("document.getElementById('stop').disabled")
        assert len(self.requests) == count + 1, "one request per press"


@pytest.fixture
def tab(browser, server):
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = Page(context.new_page(), server)
    yield page
    context.close()
    assert page.errors == [], "the page threw"


def test_continue_streams_into_the_editor(tab, server):
    tab.open()
    tab.page.click("#editor")
    tab.page.keyboard.type(OPENING)
    tab.setting("length", 1500)
    # every length the editor goes through while the text streams in
    tab.page.evaluate("""() => {
        window.seen = new Set();
        setInterval(() => window.seen.add(document.getElementById('editor').value.length), 2);
    }""")
    tab.run()
    text = tab.text
    assert text.startswith(OPENING) and len(text) == len(OPENING) + 1500
    seen = tab.page.evaluate("[...window.seen]")
    between = [n for n in seen if len(OPENING) < n < len(text)]
    assert len(between) >= 3, f"the text should appear piece by piece, saw lengths {sorted(seen)}"
    settings = {**DEFAULTS.as_dict(), "length": 1500, "raw": False}  # the form shows, and sends, the defaults
    assert tab.body() == {"text": OPENING, "settings": settings, "variants": 1, "stream": True}
    assert "Wrote 1500 characters" in tab.status
    assert tab.page.inner_text("#char-count") == f"{len(text)} characters"
    assert tab.page.is_editable("#editor")  # read-only only while the text streams in


def test_alt_e_replaces_only_what_was_written(tab):
    tab.open().write(OPENING)
    tab.setting("length", 60)
    tab.run(key="Alt+KeyQ")
    first = tab.text
    assert first.startswith(OPENING) and len(first) == len(OPENING) + 60
    tab.run(key="Alt+KeyE")
    second = tab.text
    assert second.startswith(OPENING) and len(second) == len(OPENING) + 60
    assert second != first  # a fresh sample (no seed set)
    assert tab.body()["text"] == OPENING  # the text before the written part, so nothing is re-read
    status = tab.page.locator("#status")
    assert status.get_attribute("data-reused-tokens") == status.get_attribute("data-prompt-tokens")
    assert status.get_attribute("data-kind") == "ok"


def test_rewrite_keeps_an_edited_opening(tab):
    tab.open().write(OPENING)
    tab.setting("length", 50)
    tab.run()
    written = tab.text[len(OPENING):]
    tab.page.click("#editor")
    tab.page.keyboard.press("Control+Home")
    tab.page.keyboard.type("林黛玉")  # the writer edits the opening after the continue
    assert tab.text == "林黛玉" + OPENING + written
    tab.run("#rewrite")
    assert tab.body()["text"] == "林黛玉" + OPENING
    assert tab.text.startswith("林黛玉" + OPENING) and len(tab.text) == len("林黛玉" + OPENING) + 50
    assert tab.text != "林黛玉" + OPENING + written


def test_rewrite_after_editing_the_written_part_keeps_everything(tab):
    tab.open().write(OPENING)
    tab.setting("length", 50)
    tab.run()
    edited = tab.text[:-10] + "众人惊" + tab.text[-10:]  # an edit inside what was written
    tab.write(edited)
    tab.run("#rewrite")
    assert tab.body()["text"] == edited
    assert tab.text.startswith(edited) and len(tab.text) == len(edited) + 50
    assert "it is all kept" in tab.status
    assert tab.page.get_attribute("#status", "data-kind") == "warn"
    fresh = tab.text
    tab.run("#rewrite")  # now the fresh continuation is the written part: only it is replaced
    assert tab.body()["text"] == edited
    assert tab.text.startswith(edited) and len(tab.text) == len(edited) + 50 and tab.text != fresh


def test_rewrite_before_any_continue_says_so(tab):
    tab.open().write(OPENING)
    tab.page.click("#rewrite")
    assert "press Continue first" in tab.status
    assert tab.requests == [] and tab.text == OPENING


def test_stop_aborts_the_request_and_the_server_stops_writing(tab, server):
    tab.open().write(OPENING)
    tab.setting("length", 10000)
    tab.page.click("#continue")
    tab.page.wait_for_function(f"document.getElementById('editor').value.length > {len(OPENING) + 100}")
    assert server.worker.active_rows == 1  # still writing its 10,000 characters
    tab.page.click("#stop")
    tab.page.wait_for_function("document.getElementById('stop').disabled")
    stopped = tab.text
    assert len(OPENING) + 100 < len(stopped) < len(OPENING) + 10000
    assert tab.status == "Stopped"
    time.sleep(0.6)
    assert tab.text == stopped, "the text must stop growing"
    assert any(url.endswith("/api/continue") and "ABORTED" in (failure or "") for url, failure in tab.failed)
    deadline = time.monotonic() + 10
    while server.worker.active_rows or server.worker.waiting:
        assert time.monotonic() < deadline, "the server kept writing for a client that left"
        time.sleep(0.05)
    tab.setting("length", 30)
    tab.run(key="Alt+KeyE")  # what was written before the stop is the part a rewrite replaces
    assert tab.body()["text"] == OPENING
    assert tab.text.startswith(OPENING) and len(tab.text) == len(OPENING) + 30


def test_escape_stops_too(tab):
    tab.open().write(OPENING)
    tab.setting("length", 10000)
    tab.page.click("#continue")
    tab.page.wait_for_function(f"document.getElementById('editor').value.length > {len(OPENING) + 20}")
    tab.page.keyboard.press("Escape")
    tab.page.wait_for_function("document.getElementById('stop').disabled")
    assert tab.status == "Stopped" and len(tab.text) < len(OPENING) + 10000


def test_reload_restores_the_text_and_the_settings(tab):
    tab.open().write(OPENING + "众人")
    tab.setting("temperature", 0.4)
    tab.page.reload()
    tab.page.wait_for_selector("#connection[data-state=ok]")
    assert tab.text == OPENING + "众人"
    assert tab.page.input_value("#setting-temperature") == "0.4"
    assert tab.page.inner_text("#char-count") == f"{len(OPENING) + 2} characters"
    tab.page.click("#settings-reset")
    assert tab.page.input_value("#setting-temperature") == "0.9"  # the server's default again


def test_settings_show_the_server_defaults_and_shape_the_request(tab):
    tab.open().write(OPENING)
    assert tab.page.input_value("#setting-length") == str(DEFAULT_CHARS)
    assert tab.page.input_value("#setting-temperature") == "0.9"
    assert tab.page.input_value("#setting-top_p") == "0.7"
    assert tab.page.input_value("#setting-seed") == ""
    chosen = {"length": 33, "temperature": 0.3, "top_p": 0.5, "top_p_newline": 0.6, "allow_p": 0.02, "top_k": 7,
              "presence_penalty": 0.1, "frequency_penalty": 0.2, "penalty_decay": 0.9, "seed": 1234}
    for name, value in chosen.items():
        tab.setting(name, value)
    tab.setting("raw", True)
    tab.run()
    assert tab.body() == {"text": OPENING, "settings": {**chosen, "raw": True}, "variants": 1, "stream": True}
    first = tab.text
    assert len(first) == len(OPENING) + 33 and "seed 1234" in tab.status
    tab.run("#rewrite")
    assert tab.text == first  # the same seed and settings write the same continuation


def test_variants_side_by_side_and_a_click_inserts_one(tab):
    tab.open().write(OPENING)
    tab.setting("length", 40)
    tab.setting("variants", 2)
    tab.run()
    assert tab.body()["variants"] == 2
    cards = tab.page.locator("#variant-cards .card")
    assert cards.count() == 2
    texts = [cards.nth(i).locator(".card-text").inner_text() for i in range(2)]
    assert all(len(text) == 40 for text in texts) and texts[0] != texts[1]
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert abs(first["y"] - second["y"]) < 1 and second["x"] > first["x"] + first["width"] - 1  # side by side
    assert tab.text == OPENING  # nothing goes into the story until one is chosen
    cards.nth(1).click()
    assert tab.text == OPENING + texts[1]
    assert tab.page.is_hidden("#variants")
    tab.run(key="Alt+KeyE")  # rewrite offers new variants in place of the inserted one
    assert tab.body()["text"] == OPENING and cards.count() == 2
    assert tab.text == OPENING + texts[1]
    fresh = cards.nth(0).locator(".card-text").inner_text()
    cards.nth(0).click()
    assert tab.text == OPENING + fresh


def test_a_setting_out_of_range_shows_the_server_message(tab):
    tab.open().write(OPENING)
    tab.setting("length", 20000)
    tab.run()
    assert "'settings.length' must be between 1 and 10000, got 20000" in tab.status
    assert tab.page.get_attribute("#status", "data-kind") == "error"
    assert tab.page.get_attribute("#setting-length", "aria-invalid") == "true"
    assert tab.text == OPENING


def test_a_token_protected_server(browser, token_server):
    context = browser.new_context(locale="en-US")
    tab = Page(context.new_page(), token_server).open(connected=False)
    try:
        tab.page.wait_for_selector("#connection[data-state=auth]")
        assert "missing or wrong access token" in tab.status
        tab.write(OPENING)
        tab.setting("token", "wrong")
        tab.run()
        assert tab.requests[-1].headers["authorization"] == "Bearer wrong"
        assert "missing or wrong access token" in tab.status and tab.text == OPENING
        tab.setting("token", TOKEN)
        tab.page.wait_for_selector("#connection[data-state=ok]")
        tab.setting("length", 20)
        tab.run()
        assert tab.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
        assert len(tab.text) == len(OPENING) + 20
        assert tab.errors == []
    finally:
        context.close()


def test_download_as_text(tab, tmp_path):
    tab.open().write(OPENING)
    with tab.page.expect_download() as download:
        tab.page.click("#download")
    saved = tmp_path / "story.txt"
    download.value.save_as(saved)
    assert saved.read_text(encoding="utf-8") == OPENING
    assert download.value.suggested_filename.endswith(".txt")


def test_language_follows_the_browser_and_the_switch(browser, server):
    context = browser.new_context(locale="zh-CN")
    tab = Page(context.new_page(), server).open()
    try:
        assert tab.page.inner_text("#continue").startswith("续写")
        assert tab.page.inner_text("#rewrite").startswith("换个写法")
        tab.page.click("#language")
        assert tab.page.inner_text("#continue").startswith("Continue")
        tab.page.reload()
        tab.page.wait_for_selector("#connection[data-state=ok]")
        assert tab.page.inner_text("#continue").startswith("Continue")  # the choice is remembered
        assert tab.page.evaluate("document.documentElement.lang") == "en"
    finally:
        context.close()


def test_phone_sized_screen(browser, server):
    context = browser.new_context(locale="en-US", viewport={"width": 360, "height": 740}, is_mobile=True,
                                  has_touch=True)
    tab = Page(context.new_page(), server).open()
    try:
        page = tab.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, "no sideways scrolling"
        for selector in ("#continue", "#rewrite", "#stop", "#download", "#settings-toggle"):
            box = page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360, selector
        assert page.locator("#editor").bounding_box()["height"] > 300
        assert page.is_hidden("#settings")  # the panel waits behind its button
        page.click("#settings-toggle")
        panel = page.locator("#settings").bounding_box()
        assert page.is_visible("#setting-temperature") and panel["x"] >= 0 and panel["x"] + panel["width"] <= 360
    finally:
        context.close()


def test_rewrite_rule_and_event_stream_parser(tab):
    """The pure parts (writer.js, api.js) on the edge cases the pages above do not reach."""
    tab.open()
    result = tab.page.evaluate("""async () => {
        const writer = await import('./writer.js');
        const api = await import('./api.js');
        const stream = 'event: chunk\\ndata: {"variant": 0, "text": "a\\\\nb"}\\n\\n: comment\\n\\n' +
                       'event: done\\r\\ndata: {"variants": []}\\r\\n\\r\\n';
        const parser = new api.EventStreamParser();
        const events = [];
        for (const character of stream) events.push(...parser.push(character));  // split anywhere
        return {
            none: writer.planRewrite('abc', null),
            same: writer.planRewrite('openingWRITTEN', {written: 'WRITTEN'}),
            editedBefore: writer.planRewrite('OPENINGWRITTEN', {written: 'WRITTEN'}),
            editedInside: writer.planRewrite('openingWRXTTEN', {written: 'WRITTEN'}),
            nothingWritten: writer.planRewrite('opening', {written: ''}),
            insertReplaces: writer.insertVariant('openingOLD', 'NEW', 'OLD'),
            insertAppends: writer.insertVariant('openingOLD!', 'NEW', 'OLD'),
            count: writer.countChars('林😀a'),
            events,
        };
    }""")
    assert result["none"] is None
    assert result["same"] == {"prefix": "opening", "replaces": True}
    assert result["editedBefore"] == {"prefix": "OPENING", "replaces": True}
    assert result["editedInside"] == {"prefix": "openingWRXTTEN", "replaces": False}
    assert result["nothingWritten"] == {"prefix": "opening", "replaces": True}
    assert result["insertReplaces"]["story"] == "openingNEW"
    assert result["insertAppends"]["story"] == "openingOLD!NEW"
    assert result["count"] == 3
    assert result["events"] == [{"name": "chunk", "data": '{"variant": 0, "text": "a\\nb"}'},
                                {"name": "done", "data": '{"variants": []}'}]
